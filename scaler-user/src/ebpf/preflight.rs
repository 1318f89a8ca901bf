//! Checks, before loading anything, that this process and kernel can run the
//! agent, so a failure is one line naming what is missing.

use std::path::Path;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Missing {
    #[error("scaler agent must run as root (it loads eBPF programs and writes cgroups); effective uid is {0}")]
    Root(u32),
    #[error("kernel BTF is missing ({0}); the agent needs a kernel built with CONFIG_DEBUG_INFO_BTF=y")]
    Btf(String),
    #[error(
        "the bpf() system call is not available: {0} (kernel without CONFIG_BPF_SYSCALL, or blocked by seccomp/lockdown)"
    )]
    BpfSyscall(String),
}

/// Effective uid, BTF, and a probe of the `bpf()` syscall.
pub fn check(btf_path: &Path) -> Result<(), Missing> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Err(Missing::Root(euid));
    }
    if !btf_path.exists() {
        return Err(Missing::Btf(btf_path.display().to_string()));
    }
    // BPF_PROG_GET_NEXT_ID with a zeroed attr: succeeds or ENOENT when bpf()
    // works, ENOSYS/EPERM otherwise.
    let mut attr = [0u8; 128];
    // SAFETY: a valid pointer to a zeroed buffer large enough for union bpf_attr's prefix.
    let r = unsafe {
        libc::syscall(libc::SYS_bpf, 11 /* BPF_PROG_GET_NEXT_ID */, attr.as_mut_ptr(), 12u32)
    };
    if r < 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ENOENT) {
            return Err(Missing::BpfSyscall(err.to_string()));
        }
    }
    Ok(())
}
