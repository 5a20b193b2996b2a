/// A symbol only the runtime's linker script defines and the runtime refers to, so a link
/// without the script fails with an "undefined symbol" error that names the fix. Shared by
/// the crate and its build script.
macro_rules! script_symbol {
    () => {
        "XEN_PV_RT_LINKER_SCRIPT_MISSING: add `-C link-arg=-Txen-pv-rt.ld` to rustflags"
    };
}
