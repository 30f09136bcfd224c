//! The pipeline's own parts, below the operations of [`crate::ops`]: the
//! backup and the bundle walk, the verified reads and copies, sink locks,
//! retry and timeout layers and the retention rules, for tools that
//! drive the pipeline themselves and for its tests. A plugin needs none of
//! them ([`crate::plugin`]); a front end uses [`crate::ops`].

pub use crate::backup::run_backup;
pub use crate::copy::{copy_snapshot, verified_object_stream};
pub use crate::layers::{RetryPolicy, RetrySink, TimeoutPolicy, TimeoutSink};
pub use crate::lock::{
    DEFAULT_REFRESH, LockGuard, LockInfo, LockKind, LockStatus, UnlockReport, acquire_exclusive,
    acquire_exclusive_with, acquire_shared, acquire_shared_with, is_lock_conflict, list_locks,
};
pub use crate::registry::layered;
pub use crate::restore::{
    BundleVisitor, CheckOnly, ProgressRead, RestoreInput, SourceResolver, fetch_verified, read_bundle,
    read_chunked, restore_bundle, verify_object, verify_stored,
};
pub use crate::retention::{Decision, KeepWithin, PIN_SUFFIX, PinMarker, SnapshotMeta, pin_key};
