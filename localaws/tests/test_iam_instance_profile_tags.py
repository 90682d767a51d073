"""IAM ListInstanceProfileTags, served by the layer (realism/fidelity.py; moto
5.2.5 answers it with a 500), and the tags in GetInstanceProfile."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import NO_RETRIES

NS = "{https://iam.amazonaws.com/doc/2010-05-08/}"


def tags(iam, name, **kw):
    out = iam.list_instance_profile_tags(InstanceProfileName=name, **kw)
    return out["Tags"], out


def error(e: pytest.ExceptionInfo) -> tuple[int, str, str]:
    r = e.value.response
    return r["ResponseMetadata"]["HTTPStatusCode"], r["Error"]["Code"], r["Error"]["Message"]


def test_tags_given_at_create_are_listed_sorted_by_key(aws):
    iam = aws("iam")
    iam.create_instance_profile(InstanceProfileName="nodes", Tags=[
        {"Key": "slipway:stack", "Value": "prod"}, {"Key": "slipway:address", "Value": "aws.instance_profile.nodes"}])
    listed, out = tags(iam, "nodes")
    assert listed == [{"Key": "slipway:address", "Value": "aws.instance_profile.nodes"},
                      {"Key": "slipway:stack", "Value": "prod"}]
    assert out["IsTruncated"] is False
    assert "Marker" not in out
    got = iam.get_instance_profile(InstanceProfileName="nodes")["InstanceProfile"]
    assert sorted(got["Tags"], key=lambda t: t["Key"]) == listed


def test_untagged_profile_lists_no_tags(aws):
    iam = aws("iam")
    iam.create_instance_profile(InstanceProfileName="plain")
    listed, out = tags(iam, "plain")
    assert listed == [] and out["IsTruncated"] is False and "Marker" not in out


def test_tag_and_untag_instance_profile_are_listed(aws):
    iam = aws("iam")
    iam.create_instance_profile(InstanceProfileName="nodes", Tags=[{"Key": "team", "Value": "a"}])
    iam.tag_instance_profile(InstanceProfileName="nodes", Tags=[
        {"Key": "slipway:stack", "Value": "s1"}, {"Key": "team", "Value": "b"}])
    assert tags(iam, "nodes")[0] == [{"Key": "slipway:stack", "Value": "s1"}, {"Key": "team", "Value": "b"}]
    iam.untag_instance_profile(InstanceProfileName="nodes", TagKeys=["team", "absent"])
    assert tags(iam, "nodes")[0] == [{"Key": "slipway:stack", "Value": "s1"}]
    assert iam.get_instance_profile(InstanceProfileName="nodes")["InstanceProfile"]["Tags"] == [
        {"Key": "slipway:stack", "Value": "s1"}]
    iam.untag_instance_profile(InstanceProfileName="nodes", TagKeys=["slipway:stack"])
    assert tags(iam, "nodes")[0] == []


def test_pagination_with_max_items_1(aws):
    iam = aws("iam")
    want = [{"Key": k, "Value": v} for k, v in (("a", "1"), ("b", "2"), ("c", "3"))]
    iam.create_instance_profile(InstanceProfileName="nodes", Tags=list(reversed(want)))

    pages, marker = [], None
    while True:
        listed, out = tags(iam, "nodes", MaxItems=1, **({"Marker": marker} if marker else {}))
        pages.append(listed)
        if not out["IsTruncated"]:
            assert "Marker" not in out
            break
        marker = out["Marker"]
        assert marker
    assert pages == [[t] for t in want]

    paged = iam.get_paginator("list_instance_profile_tags").paginate(
        InstanceProfileName="nodes", PaginationConfig={"PageSize": 2})
    assert [p["Tags"] for p in paged] == [want[:2], want[2:]]
    assert tags(iam, "nodes", MaxItems=1000)[0] == want


def test_missing_profile_is_no_such_entity(aws):
    iam = aws("iam")
    with pytest.raises(ClientError) as e:
        iam.list_instance_profile_tags(InstanceProfileName="missing")
    with pytest.raises(ClientError) as moto_e:
        iam.get_instance_profile(InstanceProfileName="missing")
    assert error(e) == (404, "NoSuchEntity", "Instance profile missing not found") == error(moto_e)
    with pytest.raises(ClientError) as e:
        iam.tag_instance_profile(InstanceProfileName="missing", Tags=[{"Key": "k", "Value": "v"}])
    assert error(e)[:2] == (404, "NoSuchEntity")
    with pytest.raises(ClientError) as e:
        iam.untag_instance_profile(InstanceProfileName="missing", TagKeys=["k"])
    assert error(e)[:2] == (404, "NoSuchEntity")


def test_response_is_the_iam_query_xml_shape(aws):
    iam = aws("iam")
    iam.create_instance_profile(InstanceProfileName="nodes", Tags=[{"Key": "k1", "Value": "v1"},
                                                                   {"Key": "k2", "Value": "v2"}])
    raw = []
    iam.meta.events.register("before-parse.iam.ListInstanceProfileTags",
                             lambda response_dict, **_: raw.append(response_dict))
    tags(iam, "nodes", MaxItems=1)
    r = raw[-1]
    assert r["status_code"] == 200 and r["headers"]["Content-Type"].startswith("text/xml")
    root = ET.fromstring(r["body"])
    assert root.tag == NS + "ListInstanceProfileTagsResponse"
    result = root.find(NS + "ListInstanceProfileTagsResult")
    assert [c.tag for c in result] == [NS + "Tags", NS + "IsTruncated", NS + "Marker"]
    member = result.find(f"{NS}Tags/{NS}member")
    assert (member.findtext(NS + "Key"), member.findtext(NS + "Value")) == ("k1", "v1")
    assert result.findtext(NS + "IsTruncated") == "true"
    assert root.find(f"{NS}ResponseMetadata/{NS}RequestId").text

    with pytest.raises(ClientError):
        iam.list_instance_profile_tags(InstanceProfileName="missing")
    assert raw[-1]["status_code"] == 404
    err = ET.fromstring(raw[-1]["body"])
    assert err.tag == NS + "ErrorResponse"
    assert (err.findtext(f"{NS}Error/{NS}Type"), err.findtext(f"{NS}Error/{NS}Code")) == ("Sender", "NoSuchEntity")


def test_max_items_out_of_range_and_bad_markers_are_validation_errors(aws):
    # boto3 checks MaxItems' range client-side; the Rust SDK does not.
    iam = aws("iam", NO_RETRIES.merge(Config(parameter_validation=False)))
    iam.create_instance_profile(InstanceProfileName="nodes", Tags=[{"Key": "k", "Value": "v"}])
    for bad, bound in ((0, "greater than or equal to 1"), (1001, "less than or equal to 1000")):
        with pytest.raises(ClientError) as e:
            iam.list_instance_profile_tags(InstanceProfileName="nodes", MaxItems=bad)
        status, code, message = error(e)
        assert (status, code) == (400, "ValidationError")
        assert f"Value '{bad}' at 'maxItems'" in message and bound in message
    for marker in ("nonsense", "99"):
        with pytest.raises(ClientError) as e:
            iam.list_instance_profile_tags(InstanceProfileName="nodes", Marker=marker)
        assert error(e)[:2] == (400, "ValidationError")


def test_list_instance_profile_tags_is_counted_as_read_only(aws, endpoint, account):
    from conftest import control

    iam = aws("iam")
    iam.create_instance_profile(InstanceProfileName="nodes")
    tags(iam, "nodes")
    calls = control(endpoint, "GET", f"/_realism/calls?account={account}")["calls"]
    listed = [{k: v for k, v in c.items() if k not in ("served_s", "cpu_s")} for c in calls
              if c["operation"] == "ListInstanceProfileTags"]
    assert listed == [{"account": account, "service": "iam", "operation": "ListInstanceProfileTags",
                       "mutating": False, "count": 1, "faults": 0}]
