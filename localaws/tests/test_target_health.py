"""ELBv2 target health following registration (realism/lifecycle.py):
initial -> healthy (or unhealthy), draining after deregistration, then gone."""

from __future__ import annotations

import time
import urllib.error

import pytest

from conftest import TIME_SCALE, control, wait_for

# With time_scale 0.02: initial for 0.6 s, draining for 1.2 s (deregister 60 s).


def target_group(aws):
    ec2, elb = aws("ec2"), aws("elbv2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    return elb, elb.create_target_group(Name="tg", Protocol="HTTP", Port=8080, VpcId=vpc,
                                        TargetType="ip")["TargetGroups"][0]["TargetGroupArn"]


def health(elb, arn, ids=None):
    kw = {"Targets": [{"Id": i} for i in ids]} if ids else {}
    return {d["Target"]["Id"]: d["TargetHealth"] for d in elb.describe_target_health(TargetGroupArn=arn, **kw)["TargetHealthDescriptions"]}


def test_registered_target_is_initial_then_healthy(aws, realism):
    realism({"time_scale": 0.02, "durations": {"elbv2_target_deregister": 60}})
    elb, arn = target_group(aws)
    elb.register_targets(TargetGroupArn=arn, Targets=[{"Id": "10.0.2.1", "Port": 8080}])
    t0 = time.monotonic()
    assert health(elb, arn) == {"10.0.2.1": {"State": "initial", "Reason": "Elb.RegistrationInProgress",
                                             "Description": "Target registration is in progress"}}
    d = elb.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"][0]
    assert d["Target"] == {"Id": "10.0.2.1", "Port": 8080}
    wait_for(lambda: health(elb, arn)["10.0.2.1"]["State"], lambda s: s == "healthy")
    assert time.monotonic() - t0 >= 0.5
    assert health(elb, arn) == {"10.0.2.1": {"State": "healthy"}}
    # registering it again changes nothing
    elb.register_targets(TargetGroupArn=arn, Targets=[{"Id": "10.0.2.1", "Port": 8080}])
    assert health(elb, arn)["10.0.2.1"]["State"] == "healthy"
    # a target never registered is unused
    assert health(elb, arn, ["10.0.9.9"]) == {"10.0.9.9": {
        "State": "unused", "Reason": "Target.NotRegistered", "Description": "Target is not registered to the target group"}}


def test_deregistered_target_drains_then_goes(aws, realism):
    realism({"time_scale": 0.02, "durations": {"elbv2_target_deregister": 60}})
    elb, arn = target_group(aws)
    elb.register_targets(TargetGroupArn=arn, Targets=[{"Id": "10.0.2.1", "Port": 8080}, {"Id": "10.0.2.2", "Port": 8080}])
    wait_for(lambda: {h["State"] for h in health(elb, arn).values()}, lambda s: s == {"healthy"})
    elb.deregister_targets(TargetGroupArn=arn, Targets=[{"Id": "10.0.2.1", "Port": 8080}])
    t0 = time.monotonic()
    assert health(elb, arn) == {
        "10.0.2.1": {"State": "draining", "Reason": "Target.DeregistrationInProgress",
                     "Description": "Target deregistration is in progress"},
        "10.0.2.2": {"State": "healthy"}}
    assert health(elb, arn, ["10.0.2.1"])["10.0.2.1"]["State"] == "draining"
    # deregistering a draining target again is accepted
    elb.deregister_targets(TargetGroupArn=arn, Targets=[{"Id": "10.0.2.1", "Port": 8080}])
    wait_for(lambda: health(elb, arn), lambda h: list(h) == ["10.0.2.2"])
    assert time.monotonic() - t0 >= 1.0
    assert health(elb, arn, ["10.0.2.1"])["10.0.2.1"]["State"] == "unused"
    # registered again: health checks start over
    elb.register_targets(TargetGroupArn=arn, Targets=[{"Id": "10.0.2.1", "Port": 8080}])
    assert health(elb, arn)["10.0.2.1"]["State"] == "initial"


def test_reregistering_a_draining_target_restarts_its_health_checks(aws, realism):
    realism({"time_scale": 0.02, "durations": {"elbv2_target_deregister": 60}})
    elb, arn = target_group(aws)
    elb.register_targets(TargetGroupArn=arn, Targets=[{"Id": "10.0.2.1", "Port": 8080}])
    elb.deregister_targets(TargetGroupArn=arn, Targets=[{"Id": "10.0.2.1", "Port": 8080}])
    assert health(elb, arn)["10.0.2.1"]["State"] == "draining"
    elb.register_targets(TargetGroupArn=arn, Targets=[{"Id": "10.0.2.1", "Port": 8080}])
    assert health(elb, arn) == {"10.0.2.1": {"State": "initial", "Reason": "Elb.RegistrationInProgress",
                                             "Description": "Target registration is in progress"}}
    wait_for(lambda: health(elb, arn)["10.0.2.1"]["State"], lambda s: s == "healthy")


def test_unhealthy_targets(aws, realism):
    realism({"time_scale": 0.02, "unhealthy_targets": ["10.0.2.1", "10.0.3.0/24"]})
    elb, arn = target_group(aws)
    elb.register_targets(TargetGroupArn=arn, Targets=[{"Id": ip, "Port": 8080} for ip in ("10.0.2.1", "10.0.2.2", "10.0.3.7")])
    assert {h["State"] for h in health(elb, arn).values()} == {"initial"}
    h = wait_for(lambda: health(elb, arn), lambda h: "initial" not in {x["State"] for x in h.values()})
    bad = {"State": "unhealthy", "Reason": "Target.ResponseCodeMismatch",
           "Description": "Health checks failed with these codes: [503]"}
    assert h == {"10.0.2.1": bad, "10.0.2.2": {"State": "healthy"}, "10.0.3.7": bad}
    # the list is read at every call: fixing it heals the targets
    realism({"unhealthy_targets": ["10.0.2.2"]})
    assert health(elb, arn) == {"10.0.2.1": {"State": "healthy"}, "10.0.2.2": bad, "10.0.3.7": {"State": "healthy"}}


def test_target_durations_and_unhealthy_targets_config(endpoint, realism):
    cfg = control(endpoint, "GET", "/_realism/config")
    assert cfg["durations"]["elbv2_target_healthy"] == 30
    assert cfg["durations"]["elbv2_target_deregister"] == 300
    assert cfg["unhealthy_targets"] == []
    assert cfg["time_scale"] == TIME_SCALE
    for bad in ({"unhealthy_targets": "10.0.2.1"}, {"unhealthy_targets": [1]}, {"unhealthy_targets": ["10.0.0.0/99"]}):
        with pytest.raises(urllib.error.HTTPError) as e:
            control(endpoint, "POST", "/_realism/config", bad)
        assert e.value.code == 400
