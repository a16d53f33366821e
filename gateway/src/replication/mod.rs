//! The logical replication connection: our own small client on postgres-protocol (startup,
//! authentication, CopyBoth), the slot and publication, and standby status updates.
