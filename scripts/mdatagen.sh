#!/usr/bin/env bash
# Regenerates internal/metadata, the generated tests, documentation.md and the
# README's status table from metadata.yaml.
# mdatagen names the generated test package and the issue label after the
# directory of metadata.yaml, which need not be "cloudzeroexporter" in a
# checkout: run it through a link of that name.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
link=$(mktemp -d)/cloudzeroexporter
trap 'rm -rf "$(dirname "$link")"' EXIT
ln -s "$repo" "$link"
(cd "$link" && go tool -modfile="$repo/tools/go.mod" mdatagen "$link/metadata.yaml")
# mdatagen knows the URLs of the upstream distributions only: link ours.
sed -i 's|^\[otelcol-cloudzero\]: *$|[otelcol-cloudzero]: #build-your-own-collector|' README.md
# No coverage service reports on this repository: no badge for one.
sed -i "/codecov.io/d" README.md
gofmt -w generated_*_test.go
