#!/bin/sh
# check-format.sh SOURCE_DIR - every C file of the tree is as .clang-format
# would write it, and no line of C is over 100 columns (clang-format leaves
# long strings and comments alone). Lists the files that differ; fix them
# with clang-format -i. Skipped (77) without clang-format or outside git.
set -eu
src=$1
cd "$src"
command -v clang-format >/dev/null 2>&1 || { echo "format: no clang-format; skipped"; exit 77; }
files=$(git ls-files '*.c' '*.h' 2>/dev/null | grep -v -E '\.pb-c\.|/corpus/') || true
[ -n "$files" ] || { echo "format: not a git checkout; skipped"; exit 77; }
fail=0
for f in $files; do
    [ -f "$f" ] || continue
    if ! clang-format --dry-run -Werror "$f" >/dev/null 2>&1; then
        echo "format: $f differs from .clang-format (clang-format -i $f)" >&2
        fail=1
    fi
    long=$(awk 'length($0) > 100 { printf "%s:%d ", FILENAME, FNR }' "$f")
    if [ -n "$long" ]; then
        echo "format: lines over 100 columns: $long" >&2
        fail=1
    fi
done
[ $fail -eq 0 ] || exit 1
echo "format: ok ($(echo "$files" | wc -l) files)"
