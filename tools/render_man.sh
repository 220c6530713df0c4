#!/bin/sh
# render_man: a manual page from its prose (man/PROG.N.in) and the program's options.
#   sh tools/render_man.sh PAGE.in BINARY VERSION > PAGE
# The line @OPTIONS@ becomes the output of `BINARY --man` (the rows of the option table in
# common/config.c that apply to that program), @VERSION@ the version.
set -eu
in=$1 bin=$2 version=$3
opts=$(mktemp)
trap 'rm -f "$opts"' EXIT
"$bin" --man > "$opts"
awk -v opts="$opts" -v version="$version" '
	$0 == "@OPTIONS@" { while ((getline line < opts) > 0) print line; next }
	{ gsub(/@VERSION@/, version); print }
' "$in"
