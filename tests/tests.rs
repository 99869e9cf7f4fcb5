//! The one integration-test binary (one link on 2 cores); each module is one area.

mod common;
mod golden;
mod errors;
mod cli;
mod ffi;
mod shaders;
mod cuda;
mod wgpu_ops;
mod quantize;
mod wgpu_e2e;
mod default_model;
