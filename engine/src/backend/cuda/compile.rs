//! Run-time compilation of the kernel files with NVRTC, to a CUBIN for the device's
//! architecture (or PTX for the driver to finish when NVRTC does not know that
//! architecture yet), and the `ptxas -v` resource report the CI check reads.

use super::kernels::{KernelFile, HEADERS};
use super::libs;
use crate::error::Result;
use cudarc::nvrtc::sys as nv;
use std::ffi::{c_char, c_int, CStr, CString};
use std::path::Path;

/// What NVRTC produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// Machine code for `sm_XY` (XY = major * 10 + minor).
    Cubin(u32),
    /// PTX for `compute_XY`, compiled by the driver at load.
    Ptx(u32),
}

impl Target {
    pub fn arch(&self) -> String {
        match self {
            Target::Cubin(sm) => format!("sm_{sm}"),
            Target::Ptx(c) => format!("compute_{c}"),
        }
    }
}

#[derive(Debug)]
pub struct Compiled {
    pub target: Target,
    /// CUBIN bytes, or PTX text with its trailing NUL (what `cuModuleLoadData` wants).
    pub image: Vec<u8>,
    /// NVRTC's log: warnings, and the `ptxas` report when asked for.
    pub log: String,
}

fn check(what: &str, r: nv::nvrtcResult) -> Result<()> {
    if r == nv::nvrtcResult::NVRTC_SUCCESS {
        Ok(())
    } else {
        Err(super::err(format!("NVRTC {what}: {r:?}")))
    }
}

/// The NVRTC version, `(major, minor)`.
pub fn nvrtc_version() -> Result<(i32, i32)> {
    libs::require_nvrtc()?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: the library is present (checked above); both pointers are valid.
    check("version", unsafe {
        nv::nvrtcVersion(&mut major, &mut minor)
    })?;
    Ok((major, minor))
}

/// The `sm_XY` architectures this NVRTC can emit code for, ascending.
pub fn supported_archs() -> Result<Vec<u32>> {
    libs::require_nvrtc()?;
    let mut n: c_int = 0;
    // SAFETY: the library is present; the buffer has room for `n` entries.
    check("arch count", unsafe {
        nv::nvrtcGetNumSupportedArchs(&mut n)
    })?;
    let mut archs = vec![0 as c_int; n.max(0) as usize];
    check("archs", unsafe {
        nv::nvrtcGetSupportedArchs(archs.as_mut_ptr())
    })?;
    let mut archs: Vec<u32> = archs.into_iter().map(|a| a as u32).collect();
    archs.sort_unstable();
    Ok(archs)
}

/// The options every kernel is compiled with (also part of the cache key).
pub fn options(target: Target, include_dir: &Path, ptxas_verbose: bool) -> Vec<String> {
    let mut o = vec![
        format!("--gpu-architecture={}", target.arch()),
        "--std=c++17".to_string(),
        // Precise division, square root and denormals: parity with the CPU reference.
        "--prec-div=true".to_string(),
        "--prec-sqrt=true".to_string(),
        "--ftz=false".to_string(),
        format!("--include-path={}", include_dir.display()),
    ];
    if ptxas_verbose && matches!(target, Target::Cubin(_)) {
        o.push("--ptxas-options=-v".to_string());
    }
    o
}

/// Owns an `nvrtcProgram` so every exit path destroys it.
struct Program(nv::nvrtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: created by nvrtcCreateProgram and destroyed only here.
        unsafe {
            nv::nvrtcDestroyProgram(&mut self.0);
        }
    }
}

fn cstring(what: &str, s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| super::err(format!("{what} contains a NUL byte")))
}

/// Compiles one kernel file for `target`.
pub fn compile(
    file: &KernelFile,
    target: Target,
    include_dir: &Path,
    ptxas_verbose: bool,
) -> Result<Compiled> {
    libs::require_nvrtc()?;
    let src = cstring(file.file, file.source)?;
    let name = cstring("file name", file.file)?;
    let header_src = HEADERS
        .iter()
        .map(|(n, s)| cstring(n, s))
        .collect::<Result<Vec<_>>>()?;
    let header_name = HEADERS
        .iter()
        .map(|(n, _)| cstring("header name", n))
        .collect::<Result<Vec<_>>>()?;
    let header_src_ptr: Vec<*const c_char> = header_src.iter().map(|c| c.as_ptr()).collect();
    let header_name_ptr: Vec<*const c_char> = header_name.iter().map(|c| c.as_ptr()).collect();
    let opts = options(target, include_dir, ptxas_verbose)
        .iter()
        .map(|o| cstring("option", o))
        .collect::<Result<Vec<_>>>()?;
    let opt_ptr: Vec<*const c_char> = opts.iter().map(|c| c.as_ptr()).collect();

    let mut raw: nv::nvrtcProgram = std::ptr::null_mut();
    // SAFETY: every pointer refers to a live NUL-terminated string owned above, and the
    // arrays have the lengths passed.
    check("create program", unsafe {
        nv::nvrtcCreateProgram(
            &mut raw,
            src.as_ptr(),
            name.as_ptr(),
            HEADERS.len() as c_int,
            header_src_ptr.as_ptr(),
            header_name_ptr.as_ptr(),
        )
    })?;
    let prog = Program(raw);
    // SAFETY: `prog` is a live program; the option array holds `opt_ptr.len()` strings.
    let compiled =
        unsafe { nv::nvrtcCompileProgram(prog.0, opt_ptr.len() as c_int, opt_ptr.as_ptr()) };
    let log = program_log(&prog)?;
    if compiled != nv::nvrtcResult::NVRTC_SUCCESS {
        return Err(super::err(format!(
            "NVRTC could not compile {} for {} ({compiled:?}):\n{log}",
            file.file,
            target.arch()
        )));
    }
    let image = match target {
        Target::Cubin(_) => {
            let mut n = 0usize;
            // SAFETY: the program compiled; the buffer holds the size NVRTC reports.
            check("CUBIN size", unsafe {
                nv::nvrtcGetCUBINSize(prog.0, &mut n)
            })?;
            let mut buf = vec![0u8; n];
            check("CUBIN", unsafe {
                nv::nvrtcGetCUBIN(prog.0, buf.as_mut_ptr().cast())
            })?;
            buf
        }
        Target::Ptx(_) => {
            let mut n = 0usize;
            // SAFETY: as above; the size includes the trailing NUL.
            check("PTX size", unsafe { nv::nvrtcGetPTXSize(prog.0, &mut n) })?;
            let mut buf = vec![0u8; n];
            check("PTX", unsafe {
                nv::nvrtcGetPTX(prog.0, buf.as_mut_ptr().cast())
            })?;
            buf
        }
    };
    if image.is_empty() {
        return Err(super::err(format!(
            "NVRTC returned an empty image for {} ({})",
            file.file,
            target.arch()
        )));
    }
    Ok(Compiled { target, image, log })
}

fn program_log(prog: &Program) -> Result<String> {
    let mut n = 0usize;
    // SAFETY: live program; the buffer holds the size NVRTC reports (NUL included).
    check("log size", unsafe {
        nv::nvrtcGetProgramLogSize(prog.0, &mut n)
    })?;
    let mut buf = vec![0u8; n.max(1)];
    check("log", unsafe {
        nv::nvrtcGetProgramLog(prog.0, buf.as_mut_ptr().cast())
    })?;
    let log = CStr::from_bytes_until_nul(&buf)
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(log)
}

/// Resources of one compiled function, from the `ptxas -v` log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub function: String,
    pub arch: String,
    pub registers: u32,
    pub shared_bytes: u32,
    pub stack_bytes: u32,
    pub spill_stores: u32,
    pub spill_loads: u32,
    pub local_bytes: u32,
    /// Whether this is a kernel entry point (else a non-inlined device function).
    pub entry: bool,
}

impl Resources {
    /// Register spills or local memory: what the CI check refuses.
    pub fn uses_local_memory(&self) -> bool {
        self.spill_stores > 0
            || self.spill_loads > 0
            || self.local_bytes > 0
            || self.stack_bytes > 0
    }
}

/// The number just before `unit` in `line` (`"… 12 bytes smem …"`, unit `"bytes smem"`).
fn number_before(line: &str, unit: &str) -> Option<u32> {
    let at = line.find(unit)?;
    line[..at].split_whitespace().next_back()?.parse().ok()
}

/// Parses a `ptxas -v` log: `Compiling entry function 'k' for 'sm_80'`, `Function
/// properties for k` + `N bytes stack frame, N bytes spill stores, N bytes spill loads`,
/// `Used N registers, … N bytes smem, … N bytes lmem`.
pub fn parse_ptxas_log(log: &str) -> Vec<Resources> {
    let mut out: Vec<Resources> = Vec::new();
    let mut arch = String::new();
    let mut current: Option<usize> = None; // entry being compiled ("Used" lines)
    let mut props: Option<usize> = None; // function of the last "Function properties"
    let find_or_add = |out: &mut Vec<Resources>, name: &str, arch: &str| -> usize {
        if let Some(i) = out
            .iter()
            .position(|r| r.function == name && r.arch == arch)
        {
            return i;
        }
        out.push(Resources {
            function: name.to_string(),
            arch: arch.to_string(),
            ..Default::default()
        });
        out.len() - 1
    };
    for line in log.lines() {
        if line.contains("Compiling entry function") {
            let mut q = line.split('\'');
            let name = q.nth(1).unwrap_or("").to_string();
            arch = q.nth(1).unwrap_or("").to_string();
            let i = find_or_add(&mut out, &name, &arch);
            out[i].entry = true;
            current = Some(i);
        } else if line.contains("Function properties for") {
            let name = line
                .rsplit("Function properties for")
                .next()
                .unwrap_or("")
                .trim()
                .trim_matches('\'');
            props = Some(find_or_add(&mut out, name, &arch));
        } else if line.contains("bytes stack frame") {
            if let Some(i) = props {
                out[i].stack_bytes = number_before(line, "bytes stack frame").unwrap_or(0);
                out[i].spill_stores = number_before(line, "bytes spill stores").unwrap_or(0);
                out[i].spill_loads = number_before(line, "bytes spill loads").unwrap_or(0);
            }
        } else if line.contains("Used") && line.contains("registers") {
            if let Some(i) = current {
                out[i].registers = number_before(line, "registers").unwrap_or(0);
                out[i].shared_bytes = number_before(line, "bytes smem").unwrap_or(0);
                out[i].local_bytes = number_before(line, "bytes lmem").unwrap_or(0);
            }
        }
    }
    out
}
