#!/usr/bin/env bash
# Regenerates docs/screenshots/ (the README's pictures of the web console)
# from the browser test that visits the main pages at 1280 and 390 px.
# Needs Debian's chromium and chromium-driver, like the browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."
out="$PWD/docs/screenshots"
rm -rf "$out"
TESSERA_SCREENSHOTS="$out" cargo nextest run -p tessera --features browser-tests \
  --test browser the_main_pages_read_at_1280_and_390_pixels
ls -1 "$out"
