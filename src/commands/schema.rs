//! `kup schema`: prints the plan format's JSON Schema, the same document checked in as schemas/kup-plan.schema.json.

/// The schema as checked in: pretty JSON with a trailing newline.
pub fn render() -> String {
    let mut text = serde_json::to_string_pretty(&crate::plan::schema()).unwrap_or_default();
    text.push('\n');
    text
}

/// `kup schema`.
pub(crate) fn run() -> super::CommandResult {
    print!("{}", render());
    Ok(())
}
