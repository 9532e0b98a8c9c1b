//! The plan language: TOML text → raw model with spans → validated `Plan` plus diagnostics. Pure: no host access.
