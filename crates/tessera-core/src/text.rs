//! Text that came from elsewhere (a device, a peer, the server), made safe
//! to show: to an operator, in a log line, on a person's terminal.

/// `s` without control characters (so no terminal escape sequence gets
/// through), at most `max` characters.
pub fn printable(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_go_and_the_length_is_capped() {
        assert_eq!(printable("a\u{1b}[31mb\r\nc\u{7f}", 10), "a[31mbc");
        assert_eq!(printable("héllo", 2), "hé");
        assert_eq!(printable("", 5), "");
    }
}
