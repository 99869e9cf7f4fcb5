//! The one integration-test binary (one link on 2 cores); each module is one area.

mod cli;
mod common;
mod cuda;
mod default_model;
mod errors;
mod ffi;
mod fuzz;
mod golden;
mod quantize;
mod reliability;
mod shaders;
mod wgpu_e2e;
mod wgpu_ops;
