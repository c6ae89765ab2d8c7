#!/usr/bin/env bash
# The reliability soak (see docs/reliability.md): CLUSTERSYNC_SOAK=1 runs the long versions
# of tests/reliability — bigger hypothesis budgets for the model and fuzz tests, and the
# multi-process soak under faults with at least 10,000 checked acquisitions per store.
# The soak's figures are printed and written as JSON to $CLUSTERSYNC_SOAK_REPORT
# (default: /tmp/clustersync-soak-report.json).
#   scripts/soak.sh                    # the whole reliability suite, long versions
#   scripts/soak.sh -k test_soak       # only the multi-process soak
# CLUSTERSYNC_TEST_BACKENDS=sqlite,redis,postgres selects stores, as for the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
export CLUSTERSYNC_SOAK=1
export CLUSTERSYNC_SOAK_REPORT="${CLUSTERSYNC_SOAK_REPORT:-${TMPDIR:-/tmp}/clustersync-soak-report.json}"
rm -f "$CLUSTERSYNC_SOAK_REPORT"
echo "soak figures go to $CLUSTERSYNC_SOAK_REPORT"
.venv/bin/python -m pytest tests/reliability -s -p no:cacheprovider "$@"
