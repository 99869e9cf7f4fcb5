//! The CUDA kernel sources (`engine/shaders/cuda/*.cu`, one op family per file), embedded in
//! the binary so a deployed engine needs no source tree, and the entry points of each.

/// Headers the kernel files include, handed to NVRTC in memory.
pub const HEADERS: &[(&str, &str)] = &[
    (
        "common.cuh",
        include_str!("../../../shaders/cuda/common.cuh"),
    ),
    ("gemm.cuh", include_str!("../../../shaders/cuda/gemm.cuh")),
];

/// One `.cu` file: compiled as one module.
#[derive(Debug, Clone, Copy)]
pub struct KernelFile {
    pub file: &'static str,
    pub source: &'static str,
    /// Every `extern "C" __global__` entry point of the file.
    pub entries: &'static [&'static str],
}

macro_rules! kernel_file {
    ($file:literal, [$($entry:literal),* $(,)?]) => {
        KernelFile { file: $file, source: include_str!(concat!("../../../shaders/cuda/", $file)), entries: &[$($entry),*] }
    };
}

pub const FILES: &[KernelFile] = &[
    kernel_file!(
        "matmul.cu",
        [
            "matmul_f32",
            "matmul_f16",
            "matmul_bf16",
            "matmul_q8",
            "matmul_q4",
            "swiglu_f32",
            "swiglu_f16",
            "swiglu_bf16",
            "swiglu_q8",
            "swiglu_q4",
        ]
    ),
    kernel_file!(
        "moe.cu",
        [
            "moe_route",
            "moe_group",
            "moe_combine",
            "moe_swiglu_f32",
            "moe_swiglu_f16",
            "moe_swiglu_bf16",
            "moe_swiglu_q8",
            "moe_swiglu_q4",
            "moe_down_f32",
            "moe_down_f16",
            "moe_down_bf16",
            "moe_down_q8",
            "moe_down_q4",
        ]
    ),
    kernel_file!("attention.cu", ["attention_f32", "attention_f16"]),
    kernel_file!(
        "rmsnorm.cu",
        ["rms_norm_f32", "rms_norm_f16", "rms_norm_bf16"]
    ),
    kernel_file!("logsoftmax.cu", ["log_softmax"]),
    kernel_file!(
        "embed.cu",
        [
            "gather_f32",
            "gather_f16",
            "gather_bf16",
            "gather_q8",
            "gather_q4"
        ]
    ),
    kernel_file!("elementwise.cu", ["add_assign", "f32_to_f16"]),
    kernel_file!("topk.cu", ["topb_rows", "topb_groups"]),
];

/// The file that defines entry point `entry`.
pub fn file_of(entry: &str) -> Option<&'static KernelFile> {
    FILES.iter().find(|f| f.entries.contains(&entry))
}
