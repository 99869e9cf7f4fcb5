//! The one integration-test binary (one link on 2 cores); each module is one area.

mod catalog;
mod cli;
mod common;
mod cuda;
mod default_model;
mod engine_api;
mod errors;
mod ffi;
mod fuzz;
mod golden;
mod ops;
mod quantize;
mod reliability;
mod reward;
mod shaders;
mod wgpu_e2e;
mod wgpu_ops;
