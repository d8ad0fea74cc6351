"""Validators of the deployment forms, written from the rules of the programs that read them.

Neither osqueryd nor Fleet runs where the tests run, so each deployment file is checked
against the rules its real reader applies, restated here in our words with the upstream
function and version each rule comes from:

* :mod:`.osquery` — osquery 5.23 (``a5b14f63``): pack and query keys
  (``Pack::initialize``, osquery/config/packs.cpp), reserved query names
  (osquery/database/database.cpp), flagfile flags and where they are defined;
* :mod:`.agent_options` — Fleet's agent-options validation
  (``validateJSONAgentOptionsInternal``, server/fleet/agent_options.go; flag lists of
  server/fleet/agent_options_generated.go, generated for osquery 5.14.1);
* :mod:`.apply` — ``fleetctl apply`` documents: kinds (``GroupFromBytes``,
  pkg/spec/spec.go) and spec keys per Fleet version (``QuerySpec``, ``PackSpec``,
  ``LabelSpec``), the order ``ApplyGroup`` applies them in;
* :mod:`.gitops` — ``fleetctl gitops`` files: top-level keys per Fleet version
  (``GitOpsFromFile``, pkg/spec/gitops.go; ``DeprecatedGitOpsKeyMappings``,
  pkg/spec/gitops_deprecations.go) and report/query items (``parseReports``);
* :mod:`.gojson` — how Go's ``encoding/json`` (Fleet's decoder) accepts a value for a
  typed field;
* :mod:`.snippets` — the YAML/JSON blocks of the Markdown docs, with the form and the
  versions each one claims, so documented snippets are checked like files.

Every check returns a list of problems (one sentence each, naming the upstream rule)
instead of raising, so tests can prove a validator rejects what it should.
"""
