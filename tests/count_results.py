#!/usr/bin/env python3
"""Counts test cases from a Bazel build-event JSON file.

Usage: count_results.py BEP_JSON_FILE

Reads every test.xml the event file names (cached and sharded results
included) and prints failing cases, then the closing line
`N passed, N failed`. A test target that produced no test.xml (it failed to
build, crashed before writing XML, or timed out) counts as one failed case.
Exits 0 when nothing failed, 1 otherwise.
"""

import json
import sys
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET


def xml_path(uri):
    parsed = urllib.parse.urlparse(uri)
    return urllib.parse.unquote(parsed.path) if parsed.scheme == "file" else None


def count_xml(path):
    """Returns (passed, failed, failed_names) for one JUnit XML file."""
    passed, failed, names = 0, 0, []
    root = ET.parse(path).getroot()
    for case in root.iter("testcase"):
        # gtest marks cases it did not run (filtered/disabled) as notrun.
        if case.get("status") == "notrun" or case.find("skipped") is not None:
            continue
        if case.find("failure") is not None or case.find("error") is not None:
            failed += 1
            names.append(f"{case.get('classname')}.{case.get('name')}")
        else:
            passed += 1
    return passed, failed, names


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    results = {}  # (label, run, shard) -> (status, xml path or None)
    test_targets = set()
    with open(sys.argv[1]) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            event = json.loads(line)
            ident = event.get("id", {})
            if "testResult" in ident:
                tid = ident["testResult"]
                key = (tid["label"], tid.get("run", 1), tid.get("shard", 1))
                body = event.get("testResult", {})
                xml = None
                for out in body.get("testActionOutput", []):
                    if out.get("name") == "test.xml":
                        xml = xml_path(out.get("uri", ""))
                # Later attempts (flaky retries) replace earlier ones.
                results[key] = (body.get("status", "FAILED"), xml)
            elif "targetConfigured" in ident:
                if "testSize" in event.get("configured", {}):
                    test_targets.add(ident["targetConfigured"]["label"])

    passed = failed = 0
    failures = []
    labels_with_results = set()
    for (label, run, shard), (status, xml) in sorted(results.items()):
        labels_with_results.add(label)
        cases = None  # (passed, failed, names) when the XML has any cases
        if xml:
            try:
                cases = count_xml(xml)
            except (OSError, ET.ParseError) as e:
                print(f"cannot read {xml}: {e}", file=sys.stderr)
        if cases and cases[0] + cases[1] > 0:
            p, f, names = cases
            passed += p
            failed += f
            failures += [f"{label}: {n}" for n in names]
            if status != "PASSED" and f == 0:
                # Crashed or timed out after writing a partial XML.
                failed += 1
                failures.append(f"{label}: {status}")
        elif status == "PASSED":
            # No readable cases: the target itself is the one result.
            passed += 1
        else:
            failed += 1
            failures.append(f"{label}: {status} (no test cases in test.xml)")
    for label in sorted(test_targets - labels_with_results):
        failed += 1
        failures.append(f"{label}: did not build or run")

    for name in failures:
        print(f"FAILED {name}")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
