//! `cargo run -p xtask -- dist DIR`: writes the man pages and shell completions of fsserver
//! and fsmount under DIR (see the library's documentation); `scripts/package.sh` puts them
//! in place.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [cmd, dir] = args.as_slice() else {
        eprintln!("usage: cargo run -p xtask -- dist DIR");
        std::process::exit(2);
    };
    if cmd != "dist" {
        eprintln!("unknown task {cmd:?}; usage: cargo run -p xtask -- dist DIR");
        std::process::exit(2);
    }
    if let Err(e) = xtask::dist(std::path::Path::new(dir)) {
        eprintln!("xtask: {e}");
        std::process::exit(1);
    }
}
