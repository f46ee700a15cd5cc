"""The wire contract between the daemon and its clients.

This is the only server package that `nai_tui` imports: API version, the error tree both
sides raise, and the pydantic models of request and response bodies, by concern in
`base` (versions, the strict and lenient model bases), `errors`, `jobs` (accounts,
trees, jobs, GPUs, logs), `registry`, `services` (models served on the GPUs) and
`admin` (store checks, plugins). Import them from here.
"""



from nai_server.core.bounds import (
    MAX_ID as MAX_ID,
)
from nai_server.core.states import (
    SERVICE_TERMINAL as SERVICE_TERMINAL,
)

# The job states and which of them a job never leaves: one vocabulary for the daemon,
# the batch CLI and the TUI (JobInfo.state carries the enum's value).
from nai_server.core.states import (
    JobState as JobState,
)
from nai_server.core.states import (
    ServiceState as ServiceState,
)

# Which paths and symlinks a tree may hold is part of the wire contract: clients check
# it before sending a folder and before writing a tree the server sent.
from nai_server.core.trees import (
    UNNAMED_BLOB as UNNAMED_BLOB,
)
from nai_server.core.trees import (
    link_problems as link_problems,
)
from nai_server.core.trees import (
    path_problem as path_problem,
)

# Sizes and running times read the same in the daemon's messages, the CLI and the TUI.
from nai_server.core.units import (
    format_elapsed as format_elapsed,
)
from nai_server.core.units import (
    format_size as format_size,
)

# Where things live on this machine, one rule for both sides: the client's config,
# cache and known hosts, and where a personal daemon keeps its state and socket.
from nai_server.paths import (
    default_paths as default_paths,
)
from nai_server.paths import (
    user_dir as user_dir,
)
from nai_server.protocol.admin import (
    GC_GRACE_SECONDS as GC_GRACE_SECONDS,
)
from nai_server.protocol.admin import (
    DamagedBlob as DamagedBlob,
)
from nai_server.protocol.admin import (
    DamagedJob as DamagedJob,
)
from nai_server.protocol.admin import (
    DamagedTree as DamagedTree,
)
from nai_server.protocol.admin import (
    DamagedTreeUse as DamagedTreeUse,
)
from nai_server.protocol.admin import (
    DamagedVersion as DamagedVersion,
)
from nai_server.protocol.admin import (
    GcReport as GcReport,
)
from nai_server.protocol.admin import (
    PluginChoice as PluginChoice,
)
from nai_server.protocol.admin import (
    PluginInfo as PluginInfo,
)
from nai_server.protocol.admin import (
    StoreGcStart as StoreGcStart,
)
from nai_server.protocol.admin import (
    StoreReport as StoreReport,
)
from nai_server.protocol.admin import (
    StoreVerifyStart as StoreVerifyStart,
)
from nai_server.protocol.base import (
    API_VERSION as API_VERSION,
)
from nai_server.protocol.base import (
    DIGEST_PATTERN as DIGEST_PATTERN,
)
from nai_server.protocol.base import (
    METHOD_OVERRIDE_HEADER as METHOD_OVERRIDE_HEADER,
)
from nai_server.protocol.base import (
    NAME_PATTERN as NAME_PATTERN,
)
from nai_server.protocol.base import (
    TERMINAL_STATES as TERMINAL_STATES,
)
from nai_server.protocol.base import (
    DigestText as DigestText,
)
from nai_server.protocol.base import (
    FreeJSON as FreeJSON,
)
from nai_server.protocol.base import (
    Model as Model,
)
from nai_server.protocol.base import (
    Reply as Reply,
)
from nai_server.protocol.base import (
    _digest as _digest,
)
from nai_server.protocol.base import (
    _free_json as _free_json,
)
from nai_server.protocol.errors import (
    ERRORS_BY_CODE as ERRORS_BY_CODE,
)
from nai_server.protocol.errors import (
    ApiError as ApiError,
)
from nai_server.protocol.errors import (
    Conflict as Conflict,
)
from nai_server.protocol.errors import (
    ConnectionFailed as ConnectionFailed,
)
from nai_server.protocol.errors import (
    DiskFull as DiskFull,
)
from nai_server.protocol.errors import (
    ErrorBody as ErrorBody,
)
from nai_server.protocol.errors import (
    ErrorInfo as ErrorInfo,
)
from nai_server.protocol.errors import (
    Forbidden as Forbidden,
)
from nai_server.protocol.errors import (
    Invalid as Invalid,
)
from nai_server.protocol.errors import (
    NaiError as NaiError,
)
from nai_server.protocol.errors import (
    NotFound as NotFound,
)
from nai_server.protocol.errors import (
    Unauthorized as Unauthorized,
)
from nai_server.protocol.errors import (
    Unavailable as Unavailable,
)
from nai_server.protocol.errors import (
    VersionMismatch as VersionMismatch,
)
from nai_server.protocol.errors import (
    error_from_body as error_from_body,
)
from nai_server.protocol.jobs import (
    MAX_LOG_MATCHES as MAX_LOG_MATCHES,
)
from nai_server.protocol.jobs import (
    MAX_LOG_PATTERN as MAX_LOG_PATTERN,
)
from nai_server.protocol.jobs import (
    MAX_LOG_RANGE as MAX_LOG_RANGE,
)
from nai_server.protocol.jobs import (
    DrainState as DrainState,
)
from nai_server.protocol.jobs import (
    ForeignProcess as ForeignProcess,
)
from nai_server.protocol.jobs import (
    GpuList as GpuList,
)
from nai_server.protocol.jobs import (
    GpuState as GpuState,
)
from nai_server.protocol.jobs import (
    GroupCreate as GroupCreate,
)
from nai_server.protocol.jobs import (
    GroupInfo as GroupInfo,
)
from nai_server.protocol.jobs import (
    JobInfo as JobInfo,
)
from nai_server.protocol.jobs import (
    JobList as JobList,
)
from nai_server.protocol.jobs import (
    JobSubmit as JobSubmit,
)
from nai_server.protocol.jobs import (
    LogMatches as LogMatches,
)
from nai_server.protocol.jobs import (
    Me as Me,
)
from nai_server.protocol.jobs import (
    MemberAdd as MemberAdd,
)
from nai_server.protocol.jobs import (
    MetricsPage as MetricsPage,
)
from nai_server.protocol.jobs import (
    MissingRequest as MissingRequest,
)
from nai_server.protocol.jobs import (
    MissingResponse as MissingResponse,
)
from nai_server.protocol.jobs import (
    PathsRequest as PathsRequest,
)
from nai_server.protocol.jobs import (
    Quota as Quota,
)
from nai_server.protocol.jobs import (
    TreeCreate as TreeCreate,
)
from nai_server.protocol.jobs import (
    TreeEntryIn as TreeEntryIn,
)
from nai_server.protocol.jobs import (
    TreeEntryModel as TreeEntryModel,
)
from nai_server.protocol.jobs import (
    TreeInfo as TreeInfo,
)
from nai_server.protocol.jobs import (
    TreeRef as TreeRef,
)
from nai_server.protocol.jobs import (
    UploadResult as UploadResult,
)
from nai_server.protocol.jobs import (
    UserCreate as UserCreate,
)
from nai_server.protocol.jobs import (
    UserInfo as UserInfo,
)
from nai_server.protocol.jobs import (
    VersionInfo as VersionInfo,
)
from nai_server.protocol.notify import (
    NotifyCreate as NotifyCreate,
)
from nai_server.protocol.notify import (
    NotifyInfo as NotifyInfo,
)
from nai_server.protocol.processing import (
    DatasetAnnotate as DatasetAnnotate,
)
from nai_server.protocol.processing import (
    DatasetProcess as DatasetProcess,
)
from nai_server.protocol.registry import (
    TAG_PATTERN as TAG_PATTERN,
)
from nai_server.protocol.registry import (
    ModelFromJob as ModelFromJob,
)
from nai_server.protocol.registry import (
    PushedVersion as PushedVersion,
)
from nai_server.protocol.registry import (
    RegistryCreate as RegistryCreate,
)
from nai_server.protocol.registry import (
    RegistryEntry as RegistryEntry,
)
from nai_server.protocol.registry import (
    RegistryHead as RegistryHead,
)
from nai_server.protocol.registry import (
    RegistryKind as RegistryKind,
)
from nai_server.protocol.registry import (
    RegistrySummary as RegistrySummary,
)
from nai_server.protocol.registry import (
    RegistryVersion as RegistryVersion,
)
from nai_server.protocol.registry import (
    RemovalResult as RemovalResult,
)
from nai_server.protocol.registry import (
    SharingUpdate as SharingUpdate,
)
from nai_server.protocol.registry import (
    TagUpdate as TagUpdate,
)
from nai_server.protocol.registry import (
    VersionCreate as VersionCreate,
)
from nai_server.protocol.services import (
    MODEL_REF_PATTERN as MODEL_REF_PATTERN,
)
from nai_server.protocol.services import (
    ReplicaInfo as ReplicaInfo,
)
from nai_server.protocol.services import (
    RequestStats as RequestStats,
)
from nai_server.protocol.services import (
    ServiceCreate as ServiceCreate,
)
from nai_server.protocol.services import (
    ServiceInfo as ServiceInfo,
)
from nai_server.protocol.services import (
    ServiceList as ServiceList,
)
from nai_server.protocol.services import (
    ServiceUpdate as ServiceUpdate,
)
from nai_server.protocol.services import (
    TokenCreate as TokenCreate,
)
from nai_server.protocol.services import (
    TokenInfo as TokenInfo,
)

# A refused value said in words, the same in the daemon's 400s and a client's own checks.
from nai_server.protocol.validation import (
    error_sentence as error_sentence,
)
from nai_server.protocol.validation import (
    pattern_rule as pattern_rule,
)
