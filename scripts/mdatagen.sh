#!/usr/bin/env bash
# Regenerates internal/metadata and the generated tests from metadata.yaml.
# mdatagen names the generated test package after the checkout's directory,
# which need not be "cloudzeroexporter": fix the package line afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
go tool -modfile=tools/go.mod mdatagen metadata.yaml
for f in generated_*_test.go; do
  sed -i '0,/^package .*/s//package cloudzeroexporter/' "$f"
done
gofmt -w generated_*_test.go
