"""What the store's and the disk's failures mean to a caller, as protocol errors.

The API maps these to answers without knowing the store or the host: a damaged blob
store is a 409 that names the lost files, a write that found no space (or a state
directory below its free-space floor) is a 507.
"""

from __future__ import annotations

from nai_server.config import ServerConfig
from nai_server.core.bounds import shown
from nai_server.host import diskspace
from nai_server.protocol import ApiError, Conflict, DiskFull
from nai_server.store.blobs import BlobNotFound, MissingBlobs, StoreCorrupt

# The store's errors that mean its files are missing or damaged (raised before a
# streamed answer starts: the store checks first, so the caller gets a status).
STORE_DAMAGED: tuple[type[Exception], ...] = (MissingBlobs, BlobNotFound, StoreCorrupt)

_DAMAGED = Conflict(
    "the server's blob store is damaged: files this request needs are missing or do not "
    "match their ids; ask the server's admin (`nai-admin store verify` lists what is "
    "damaged; restore the state directory's blobs/ and trees/ from a backup)")


def store_damaged(exc: Exception) -> Conflict:
    """The 409 for one of STORE_DAMAGED; names the lost files where the store knows them."""
    if isinstance(exc, MissingBlobs) and exc.paths:
        return lost_files(exc)
    return _DAMAGED


def lost_files(exc: MissingBlobs) -> Conflict:
    """The 409 for a tree whose files' blobs the store lost, naming the files (only
    raised for a tree the caller may read: its paths are theirs to see)."""
    named = ", ".join(shown(p) for p in exc.paths[:5])
    more = f" and {len(exc.paths) - 5} more" if len(exc.paths) > 5 else ""
    return Conflict(
        f"{len(exc.paths)} file(s) of this tree are missing from the server's blob store: "
        f"{named}{more}. Whoever has them can push them again (that restores them); "
        "ask the server's admin to run `nai-admin store verify`",
        details={"missing_files": exc.paths[:1000], "missing": exc.digests[:1000]})


def disk_full(exc: BaseException) -> DiskFull | None:
    """The 507 for an error that was (or was caused by) a write that found no space;
    None for any other error. An ApiError keeps its own words (a failed commit says
    that nothing of the request was kept)."""
    if not diskspace.is_disk_full(exc):
        return None
    if isinstance(exc, ApiError):
        return DiskFull(f"{diskspace.DISK_FULL_MESSAGE} ({exc.message})")
    return DiskFull(diskspace.DISK_FULL_MESSAGE)


def uploads_refused(config: ServerConfig) -> DiskFull | None:
    """The 507 for an upload while the state dir is below its free-space floor."""
    why = diskspace.below_floor(config)
    return None if why is None else DiskFull(why)
