//! `onerec devices`: the GPU adapters the wgpu backend sees, with the index
//! `EngineOptions::device` (and the C API's device_index) takes.

use anyhow::Result;
use onerec_engine::backend::wgpu::list_adapters;
use serde_json::json;

#[derive(clap::Args, Debug)]
pub struct DevicesArgs {
    /// Print one JSON array instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(a: DevicesArgs) -> Result<()> {
    let adapters = list_adapters();
    if a.json {
        let list: Vec<_> = adapters
            .iter()
            .map(|d| {
                json!({"index": d.index, "name": d.name, "type": d.device_type,
                       "backend": d.backend, "driver": d.driver, "software": d.is_software})
            })
            .collect();
        println!("{}", serde_json::Value::Array(list));
        return Ok(());
    }
    if adapters.is_empty() {
        println!("no GPU adapter (the CPU backend serves; on Linux without a GPU, mesa-vulkan-drivers gives lavapipe)");
        return Ok(());
    }
    println!(
        "{:>5}  {:<14}  {:<7}  {:<40}  driver",
        "index", "type", "backend", "name"
    );
    for d in &adapters {
        let kind = if d.is_software {
            format!("{} (software)", d.device_type)
        } else {
            d.device_type.clone()
        };
        println!(
            "{:>5}  {:<14}  {:<7}  {:<40}  {}",
            d.index, kind, d.backend, d.name, d.driver
        );
    }
    Ok(())
}
