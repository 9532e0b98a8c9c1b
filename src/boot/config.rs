//! Reading a kernel build configuration (`CONFIG_X=y` lines) for the options the advice and the checks rely on.

use super::advice::KernelConfig;

/// The configuration in `text` (read from `path`), reduced to what the advice needs.
pub(crate) fn kernel_config(path: String, text: &[u8]) -> KernelConfig {
    KernelConfig {
        deferred_struct_page_init: config_enabled(text, "CONFIG_DEFERRED_STRUCT_PAGE_INIT"),
        path,
    }
}

/// `CONFIG_X=y` means on; `# CONFIG_X is not set` or no line at all means off.
pub(crate) fn config_enabled(config: &[u8], option: &str) -> bool {
    let wanted = format!("{option}=y");
    String::from_utf8_lossy(config)
        .lines()
        .any(|l| l.trim() == wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_lines() {
        let config = b"CONFIG_X86_64=y\n# CONFIG_DEFERRED_STRUCT_PAGE_INIT is not set\nCONFIG_HOTPLUG_PARALLEL=y\n";
        assert!(!config_enabled(config, "CONFIG_DEFERRED_STRUCT_PAGE_INIT"));
        assert!(config_enabled(config, "CONFIG_HOTPLUG_PARALLEL"));
        assert!(!config_enabled(
            b"CONFIG_HOTPLUG_PARALLEL_X=y",
            "CONFIG_HOTPLUG_PARALLEL"
        ));
    }
}
