//! placeholder
pub fn run() -> anyhow::Result<()> { todo!() }
