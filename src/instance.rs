//! This process's identity: its name in outcomes (`checker`), logs, scheduler
//! leases and, by default, its static consumer-group membership
//! (`kafka.instance_id`).

/// The host name (from `/proc/sys/kernel/hostname`), or `sitewatch` when it
/// cannot be read.
pub fn instance_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "sitewatch".to_owned())
}
