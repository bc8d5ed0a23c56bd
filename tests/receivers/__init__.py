"""Test servers implementing SIEM receivers' documented contracts, for receivers that cannot run
here (Splunk HEC, Elasticsearch `_bulk`)."""
