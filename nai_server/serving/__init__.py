"""Zero-code serving: the small ASGI server each replica of a service runs.

`python -m nai_server.serving.replica` is what the daemon starts for a model version
whose files hold a `predict.py` (and no `serve:` section of its own). It runs as the
service owner's unix user, in the replica's directory, and reads its settings from the
environment. The daemon (nai_server.host.replicas) and this package agree on these names:

    NAI_MODEL_DIR        the model version's files, read-only; must hold predict.py
    NAI_SERVE_SOCKET     the unix socket to listen on (made mode 0600: only the replica's
                         user and root reach it; callers go through the daemon's proxy)
    NAI_SERVE_PORT       or a TCP port on 127.0.0.1, when no socket is given
    NAI_SERVE_TOKEN_FILE or, on a Slurm node, a TCP port on every address, served only
                         to a peer that proves this run's token (serving/link.py);
    NAI_SERVE_ADDRESS_FILE  where "IP:PORT" is written for the daemon
    NAI_MODEL            the version served, "name@version", for GET /metadata
    NAI_MODEL_NAME       or the model's name and version apart (these win over
    NAI_MODEL_VERSION    NAI_MODEL when both are set)
    NAI_MODEL_METADATA   optional: the version's registry metadata as a JSON object
                         (source job, metrics...), the lineage GET /metadata reports
    NAI_SERVICE          optional: the service's name; NAI_REPLICA: this replica's index
    NAI_MAX_BATCH        optional: group up to this many concurrent requests into one
                         predict_batch call (default 1: no batching)
    NAI_MAX_WAIT_MS      optional: how long the first request of a batch waits for
                         others to join it (default 5)

`predict.py` defines `load(model_dir)` (called once, before /health turns 200) and
`predict(inputs)`; an optional `predict_batch(list_of_inputs)` returns one output per
input, in order. The replica answers:

    POST /predict    {"inputs": ...} → {"outputs": ...}; 400 for a body that is not such
                     JSON, 500 with the exception's text when predict raises
    GET  /health     503 while the model loads, 200 once it is loaded
    GET  /metadata   {"name", "version", "lineage", "files_metadata", "batching"}

Files in the model directory named `metadata.json` or `nai-model.json` (a JSON object)
are reported as `files_metadata`.
"""
