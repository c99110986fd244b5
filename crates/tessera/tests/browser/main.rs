//! Browser tests: the server's web pages in Debian's Chromium, driven over
//! WebDriver by `chromedriver`, the way a person uses them.
//!
//! They need `chromium` and `chromium-driver` (`.ci/run` installs both), so
//! this binary is built only with the `browser-tests` feature:
//! `cargo nextest run -p tessera --features browser-tests --test browser`.

mod console_admin;
mod console_auth;
mod console_devices;
mod console_screen;
mod console_screen_h264;
mod console_support;
mod console_terminal;
mod device_page;
mod driver;
