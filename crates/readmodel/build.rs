//! `sqlx::migrate!` embeds `migrations/` at compile time: rebuild when a migration is added
//! or changed, not only when the crate's sources are (as sqlx's documentation advises).

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
