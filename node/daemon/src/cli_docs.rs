//! Man pages and shell completions generated from a binary's clap definition
//! (`cairn generate man DIR`, `cairn generate completions bash`), so the
//! packaged docs never drift from the flags the binary accepts.

use std::path::Path;

use clap::Command;

/// Writes `<name>.1` and one page per subcommand (`<name>-<sub>.1`) into `dir`.
pub fn write_man_pages(cmd: Command, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let cmd = cmd.disable_help_subcommand(true);
    let name = cmd.get_name().to_string();
    render(&cmd, &name, dir)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let sub_name = format!("{name}-{}", sub.get_name());
        let page = sub.clone().name(sub_name.clone());
        render(&page, &sub_name, dir)?;
    }
    Ok(())
}

fn render(cmd: &Command, name: &str, dir: &Path) -> std::io::Result<()> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut out)?;
    std::fs::write(dir.join(format!("{name}.1")), out)
}

/// Writes the completion script for `shell` (bash, zsh, fish) to stdout.
pub fn write_completions(mut cmd: Command, shell: &str) -> Result<(), String> {
    use clap_complete::Shell;
    let shell = match shell {
        "bash" => Shell::Bash,
        "zsh" => Shell::Zsh,
        "fish" => Shell::Fish,
        other => return Err(format!("unknown shell {other:?}: use bash, zsh or fish")),
    };
    let name = cmd.get_name().to_string();
    clap_complete::generate(shell, &mut cmd, name, &mut std::io::stdout());
    Ok(())
}
