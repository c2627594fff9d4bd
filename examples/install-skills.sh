#!/bin/sh
# Sign and install the skills an example ships (examples/NAME/skills/*/) into $PALYRA_STATE_ROOT.
#
#   sh examples/install-skills.sh examples/sre-reports
#
# The packages are signed with a publisher key made for this state root on first use
# ($PALYRA_STATE_ROOT/examples-publisher.pem, trusted there as publisher "examples" and nowhere
# else). Good for trying the examples; real skills come signed by their publisher (docs/skills.md).
# The example directories are not modified: each package is signed in a temporary copy.
set -eu
example=${1:?usage: sh examples/install-skills.sh examples/NAME}
: "${PALYRA_STATE_ROOT:?set PALYRA_STATE_ROOT to the state root the example uses (see its README)}"
key="$PALYRA_STATE_ROOT/examples-publisher.pem"
if [ ! -f "$key" ]; then
  pub=$(palyra-ops skills keygen "$key")
  palyra-ops skills trust add examples "$pub"
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM
for pkg in "$example"/skills/*/; do
  name=$(basename "$pkg")
  cp -R "$pkg" "$work/$name"
  palyra-ops skills sign "$work/$name" --key "$key"
  palyra-ops skills install "$work/$name"
done
