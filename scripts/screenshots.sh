#!/usr/bin/env bash
# Regenerates docs/screenshots/ (the README's pictures of the web console)
# from the browser tests that visit the main pages at 1280 and 390 px (and
# the screen viewer's, which needs Xvfb too).
# Needs Debian's chromium and chromium-driver, like the browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."
out="$PWD/docs/screenshots"
rm -rf "$out"
TESSERA_SCREENSHOTS="$out" cargo nextest run -p tessera --features browser-tests \
  --test browser the_main_pages_read_at_1280_and_390_pixels \
  the_canvas_shows_the_display_exactly_and_control_input_reaches_it
ls -1 "$out"
