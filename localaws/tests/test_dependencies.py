"""EC2 deletes of objects still in use answer DependencyViolation, as on AWS
(realism/dependencies.py), and are accepted once the user is gone."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from conftest import control, wait_for

AMI_PARAM = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
ROLE = "arn:aws:iam::{}:role/eks-cluster"
# With the session's time scale (0.002): DELETING / deleting / shutting-down
# last long enough to be seen refusing, and end soon.
SLOW_DELETES = {"durations": {"eks_cluster_delete": 750, "nat_gateway_delete": 500,
                              "ec2_instance_terminate": 500, "ec2_instance_stop": 250}}


@pytest.fixture
def slow_deletes(realism):
    realism(SLOW_DELETES)


def network(ec2):
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    a = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24", AvailabilityZone="ap-south-1a")["Subnet"]["SubnetId"]
    b = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.2.0/24", AvailabilityZone="ap-south-1b")["Subnet"]["SubnetId"]
    return vpc, a, b


def refused(fn, **kw):
    """fn(**kw) fails with DependencyViolation (400); returns the message."""
    with pytest.raises(ClientError) as excinfo:
        fn(**kw)
    e = excinfo.value.response
    assert (e["ResponseMetadata"]["HTTPStatusCode"], e["Error"]["Code"]) == (400, "DependencyViolation"), e
    return e["Error"]["Message"]


def subnet_refused(ec2, subnet):
    msg = refused(ec2.delete_subnet, SubnetId=subnet)
    assert msg == f"The subnet '{subnet}' has dependencies and cannot be deleted."


def group_refused(ec2, group):
    assert refused(ec2.delete_security_group, GroupId=group) == f"resource {group} has a dependent object"


def vpc_refused(ec2, vpc):
    assert refused(ec2.delete_vpc, VpcId=vpc) == f"The vpc '{vpc}' has dependencies and cannot be deleted."


def detach_refused(ec2, igw, vpc):
    msg = refused(ec2.detach_internet_gateway, InternetGatewayId=igw, VpcId=vpc)
    assert msg == (f"Network {vpc} has some mapped public address(es). "
                   "Please unmap those public address(es) before detaching the gateway.")


def subnet_ids(ec2, vpc):
    return {s["SubnetId"] for s in ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]}


def ami(aws):
    return aws("ssm").get_parameter(Name=AMI_PARAM)["Parameter"]["Value"]


def instance_state(ec2, iid):
    return ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["State"]["Name"]


def terminate(ec2, iid, check=None):
    """Terminate; run check() while shutting-down; return once terminated."""
    ec2.terminate_instances(InstanceIds=[iid])
    assert instance_state(ec2, iid) == "shutting-down"
    if check:
        check()
    wait_for(lambda: instance_state(ec2, iid), lambda s: s == "terminated")


def nat_state(ec2, nat):
    return ec2.describe_nat_gateways(NatGatewayIds=[nat])["NatGateways"][0]["State"]


def create_nat(ec2, subnet):
    eip = ec2.allocate_address(Domain="vpc")["AllocationId"]
    return ec2.create_nat_gateway(SubnetId=subnet, AllocationId=eip)["NatGateway"]["NatGatewayId"]


def cluster_gone(eks, name):
    try:
        eks.describe_cluster(name=name)
    except ClientError as e:
        return e.response["Error"]["Code"] == "ResourceNotFoundException"
    return False


def create_cluster(aws, account, subnets, groups=()):
    eks = aws("eks")
    eks.create_cluster(name="c1", roleArn=ROLE.format(account),
                       resourcesVpcConfig={"subnetIds": list(subnets), "securityGroupIds": list(groups)})
    return eks


def delete_cluster(eks, check):
    """Delete c1; run check() while DELETING; return once it is gone."""
    eks.delete_cluster(name="c1")
    assert eks.describe_cluster(name="c1")["cluster"]["status"] == "DELETING"
    check()
    wait_for(lambda: cluster_gone(eks, "c1"), bool)


# ------------------------------------------------------------- DeleteSubnet ---


def test_subnet_of_an_eks_cluster_is_refused_until_the_cluster_is_gone(aws, account, slow_deletes):
    ec2 = aws("ec2")
    _, a, b = network(ec2)
    eks = create_cluster(aws, account, [a, b])
    subnet_refused(ec2, a)  # CREATING
    wait_for(lambda: eks.describe_cluster(name="c1")["cluster"]["status"], lambda s: s == "ACTIVE")
    subnet_refused(ec2, b)
    delete_cluster(eks, lambda: (subnet_refused(ec2, a), subnet_refused(ec2, b)))
    ec2.delete_subnet(SubnetId=a)
    ec2.delete_subnet(SubnetId=b)


def test_subnet_of_a_load_balancer_is_refused_until_it_is_deleted(aws):
    ec2, elb = aws("ec2"), aws("elbv2")
    vpc, a, b = network(ec2)
    lb = elb.create_load_balancer(Name="web", Subnets=[a, b], Type="application")["LoadBalancers"][0]
    subnet_refused(ec2, a)
    subnet_refused(ec2, b)
    elb.delete_load_balancer(LoadBalancerArn=lb["LoadBalancerArn"])
    ec2.delete_subnet(SubnetId=a)
    assert subnet_ids(ec2, vpc) == {b}


def test_subnet_of_an_instance_is_refused_until_it_is_terminated(aws, slow_deletes):
    ec2 = aws("ec2")
    _, subnet, other = network(ec2)
    run = ec2.run_instances(ImageId=ami(aws), InstanceType="t3.micro", MinCount=1, MaxCount=1, SubnetId=subnet)
    iid = run["Instances"][0]["InstanceId"]
    subnet_refused(ec2, subnet)  # pending
    ec2.delete_subnet(SubnetId=other)  # another subnet of the VPC is free
    wait_for(lambda: instance_state(ec2, iid), lambda s: s == "running")
    subnet_refused(ec2, subnet)
    ec2.stop_instances(InstanceIds=[iid])
    subnet_refused(ec2, subnet)  # stopping
    wait_for(lambda: instance_state(ec2, iid), lambda s: s == "stopped")
    subnet_refused(ec2, subnet)
    terminate(ec2, iid, lambda: subnet_refused(ec2, subnet))
    ec2.delete_subnet(SubnetId=subnet)


def test_subnet_of_a_nat_gateway_is_refused_until_it_is_deleted(aws, slow_deletes):
    ec2 = aws("ec2")
    _, subnet, _ = network(ec2)
    nat = create_nat(ec2, subnet)
    subnet_refused(ec2, subnet)  # pending
    wait_for(lambda: nat_state(ec2, nat), lambda s: s == "available")
    subnet_refused(ec2, subnet)
    ec2.delete_nat_gateway(NatGatewayId=nat)
    assert nat_state(ec2, nat) == "deleting"
    subnet_refused(ec2, subnet)
    wait_for(lambda: nat_state(ec2, nat), lambda s: s == "deleted")
    ec2.delete_subnet(SubnetId=subnet)


def test_unknown_subnet_is_still_not_found(aws):
    with pytest.raises(ClientError) as excinfo:
        aws("ec2").delete_subnet(SubnetId="subnet-0123456789abcdef0")
    assert excinfo.value.response["Error"]["Code"] == "InvalidSubnetID.NotFound"


# ------------------------------------------------------ DeleteSecurityGroup ---


def group(ec2, vpc, name):
    return ec2.create_security_group(GroupName=name, Description=name, VpcId=vpc)["GroupId"]


def test_group_of_an_instance_is_refused_until_it_is_terminated(aws, slow_deletes):
    ec2 = aws("ec2")
    vpc, subnet, _ = network(ec2)
    sg = group(ec2, vpc, "app")
    run = ec2.run_instances(ImageId=ami(aws), InstanceType="t3.micro", MinCount=1, MaxCount=1,
                            SubnetId=subnet, SecurityGroupIds=[sg])
    iid = run["Instances"][0]["InstanceId"]
    group_refused(ec2, sg)
    wait_for(lambda: instance_state(ec2, iid), lambda s: s == "running")
    group_refused(ec2, sg)
    terminate(ec2, iid, lambda: group_refused(ec2, sg))
    ec2.delete_security_group(GroupId=sg)


def test_group_changed_off_an_instance_can_be_deleted(aws):
    ec2 = aws("ec2")
    vpc, subnet, _ = network(ec2)
    old, new = group(ec2, vpc, "old"), group(ec2, vpc, "new")
    run = ec2.run_instances(ImageId=ami(aws), InstanceType="t3.micro", MinCount=1, MaxCount=1,
                            SubnetId=subnet, SecurityGroupIds=[old])
    iid = run["Instances"][0]["InstanceId"]
    group_refused(ec2, old)
    ec2.modify_instance_attribute(InstanceId=iid, Groups=[new])
    ec2.delete_security_group(GroupId=old)
    group_refused(ec2, new)


def test_group_of_a_load_balancer_is_refused_until_it_is_deleted(aws):
    ec2, elb = aws("ec2"), aws("elbv2")
    vpc, a, b = network(ec2)
    sg = group(ec2, vpc, "lb")
    lb = elb.create_load_balancer(Name="web", Subnets=[a, b], SecurityGroups=[sg])["LoadBalancers"][0]
    group_refused(ec2, sg)
    refused(ec2.delete_security_group, GroupName="lb")  # by name too
    elb.delete_load_balancer(LoadBalancerArn=lb["LoadBalancerArn"])
    ec2.delete_security_group(GroupId=sg)


def test_group_of_an_eks_cluster_is_refused_until_the_cluster_is_gone(aws, account, slow_deletes):
    ec2 = aws("ec2")
    vpc, a, b = network(ec2)
    sg = group(ec2, vpc, "cluster")
    eks = create_cluster(aws, account, [a, b], [sg])
    group_refused(ec2, sg)
    delete_cluster(eks, lambda: group_refused(ec2, sg))
    ec2.delete_security_group(GroupId=sg)


def test_group_referenced_by_another_groups_rule_is_refused_until_the_rule_is_gone(aws):
    ec2 = aws("ec2")
    vpc, _, _ = network(ec2)
    source, target = group(ec2, vpc, "source"), group(ec2, vpc, "target")
    perm = {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "UserIdGroupPairs": [{"GroupId": source}]}
    ec2.authorize_security_group_ingress(GroupId=target, IpPermissions=[perm])
    group_refused(ec2, source)
    ec2.revoke_security_group_ingress(GroupId=target, IpPermissions=[perm])
    ec2.authorize_security_group_egress(GroupId=target, IpPermissions=[perm])
    group_refused(ec2, source)
    ec2.revoke_security_group_egress(GroupId=target, IpPermissions=[perm])
    ec2.delete_security_group(GroupId=source)
    ec2.delete_security_group(GroupId=target)


def test_group_referencing_itself_can_be_deleted(aws):
    ec2 = aws("ec2")
    vpc, _, _ = network(ec2)
    sg = group(ec2, vpc, "self")
    ec2.authorize_security_group_ingress(GroupId=sg, IpPermissions=[
        {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": sg}]}])
    ec2.delete_security_group(GroupId=sg)


# ---------------------------------------------------------------- DeleteVpc ---


def test_vpc_with_a_security_group_is_refused_until_it_is_deleted(aws):
    ec2 = aws("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    sg = group(ec2, vpc, "extra")
    vpc_refused(ec2, vpc)
    ec2.delete_security_group(GroupId=sg)
    ec2.delete_vpc(VpcId=vpc)  # its default group goes with it
    assert not ec2.describe_vpcs(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Vpcs"]
    assert not ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["SecurityGroups"]


def test_vpc_with_an_internet_gateway_is_refused_until_it_is_detached(aws):
    ec2 = aws("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
    vpc_refused(ec2, vpc)
    ec2.detach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
    ec2.delete_vpc(VpcId=vpc)
    ec2.delete_internet_gateway(InternetGatewayId=igw)


def test_vpc_with_a_subnet_is_refused_by_moto_until_it_is_deleted(aws):
    ec2 = aws("ec2")
    vpc, a, b = network(ec2)
    vpc_refused(ec2, vpc)
    ec2.delete_subnet(SubnetId=a)
    vpc_refused(ec2, vpc)
    ec2.delete_subnet(SubnetId=b)
    ec2.delete_vpc(VpcId=vpc)


# ------------------------------------------------------ DetachInternetGateway ---


def attached_igw(ec2, vpc):
    igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
    return igw


def test_detach_with_a_nat_gateway_is_refused_until_it_is_deleted(aws, slow_deletes):
    ec2 = aws("ec2")
    vpc, subnet, _ = network(ec2)
    igw = attached_igw(ec2, vpc)
    nat = create_nat(ec2, subnet)
    detach_refused(ec2, igw, vpc)
    ec2.delete_nat_gateway(NatGatewayId=nat)
    detach_refused(ec2, igw, vpc)  # deleting
    wait_for(lambda: nat_state(ec2, nat), lambda s: s == "deleted")
    ec2.detach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
    refused(ec2.delete_internet_gateway, InternetGatewayId=attached_igw(ec2, vpc))  # moto: still attached


def test_detach_with_a_public_instance_is_refused_until_it_is_terminated(aws, slow_deletes):
    ec2 = aws("ec2")
    vpc, subnet, _ = network(ec2)
    igw = attached_igw(ec2, vpc)
    private = ec2.run_instances(ImageId=ami(aws), InstanceType="t3.micro", MinCount=1, MaxCount=1,
                                SubnetId=subnet)["Instances"][0]
    assert not private.get("PublicIpAddress")
    public = ec2.run_instances(ImageId=ami(aws), InstanceType="t3.micro", MinCount=1, MaxCount=1,
                               NetworkInterfaces=[{"DeviceIndex": 0, "SubnetId": subnet,
                                                   "AssociatePublicIpAddress": True}])["Instances"][0]
    detach_refused(ec2, igw, vpc)  # pending
    wait_for(lambda: instance_state(ec2, public["InstanceId"]), lambda s: s == "running")
    detach_refused(ec2, igw, vpc)
    terminate(ec2, public["InstanceId"])
    eip = ec2.allocate_address(Domain="vpc")["AllocationId"]
    assoc = ec2.associate_address(AllocationId=eip, InstanceId=private["InstanceId"])["AssociationId"]
    detach_refused(ec2, igw, vpc)  # an Elastic IP on the private one
    ec2.disassociate_address(AssociationId=assoc)
    ec2.detach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)  # the private instance maps no address


def test_detach_with_an_internet_facing_load_balancer_is_refused(aws):
    ec2, elb = aws("ec2"), aws("elbv2")
    vpc, a, b = network(ec2)
    igw = attached_igw(ec2, vpc)
    internal = elb.create_load_balancer(Name="internal", Subnets=[a, b], Scheme="internal")["LoadBalancers"][0]
    public = elb.create_load_balancer(Name="public", Subnets=[a, b])["LoadBalancers"][0]
    detach_refused(ec2, igw, vpc)
    elb.delete_load_balancer(LoadBalancerArn=public["LoadBalancerArn"])
    ec2.detach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
    elb.delete_load_balancer(LoadBalancerArn=internal["LoadBalancerArn"])


# --------------------------------------------------------- a whole teardown ---


def test_teardown_in_dependency_order_is_accepted(aws, account, slow_deletes):
    ec2, elb = aws("ec2"), aws("elbv2")
    vpc, a, b = network(ec2)
    igw = attached_igw(ec2, vpc)
    nat = create_nat(ec2, a)
    lb_sg, node_sg = group(ec2, vpc, "lb"), group(ec2, vpc, "node")
    ec2.authorize_security_group_ingress(GroupId=node_sg, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "UserIdGroupPairs": [{"GroupId": lb_sg}]}])
    lb = elb.create_load_balancer(Name="web", Subnets=[a, b], SecurityGroups=[lb_sg])["LoadBalancers"][0]
    iid = ec2.run_instances(ImageId=ami(aws), InstanceType="t3.micro", MinCount=1, MaxCount=1,
                            SubnetId=b, SecurityGroupIds=[node_sg])["Instances"][0]["InstanceId"]
    eks = create_cluster(aws, account, [a, b], [node_sg])

    delete_cluster(eks, lambda: None)
    terminate(ec2, iid)
    elb.delete_load_balancer(LoadBalancerArn=lb["LoadBalancerArn"])
    ec2.delete_nat_gateway(NatGatewayId=nat)
    wait_for(lambda: nat_state(ec2, nat), lambda s: s == "deleted")
    group_refused(ec2, lb_sg)  # still referenced by node_sg's rule
    ec2.delete_security_group(GroupId=node_sg)
    ec2.delete_security_group(GroupId=lb_sg)
    ec2.delete_subnet(SubnetId=a)
    ec2.delete_subnet(SubnetId=b)
    ec2.detach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
    ec2.delete_internet_gateway(InternetGatewayId=igw)
    ec2.delete_vpc(VpcId=vpc)


# ------------------------------------------------------------------ config ---


def test_dependency_violations_can_be_turned_off(aws, endpoint, realism):
    assert control(endpoint, "GET", "/_realism/config")["dependency_violations"] is True
    ec2, elb = aws("ec2"), aws("elbv2")
    vpc, a, b = network(ec2)
    sg = group(ec2, vpc, "app")
    ec2.run_instances(ImageId=ami(aws), InstanceType="t3.micro", MinCount=1, MaxCount=1,
                      SubnetId=a, SecurityGroupIds=[sg])
    elb.create_load_balancer(Name="web", Subnets=[a, b])
    igw = attached_igw(ec2, vpc)
    subnet_refused(ec2, a)

    assert realism({"dependency_violations": False})["dependency_violations"] is False
    ec2.delete_security_group(GroupId=sg)
    ec2.delete_subnet(SubnetId=a)
    ec2.detach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
    # moto's own checks stay
    vpc_refused(ec2, vpc)
    realism({"dependency_violations": True})
    subnet_refused(ec2, b)


def test_dependency_violations_config_is_validated(endpoint):
    import json
    import urllib.error
    import urllib.request

    for bad in ("no", 0, None):
        req = urllib.request.Request(endpoint + "/_realism/config", method="POST",
                                     data=json.dumps({"dependency_violations": bad}).encode())
        with pytest.raises(urllib.error.HTTPError) as excinfo:
            urllib.request.urlopen(req, timeout=10)
        assert excinfo.value.code == 400
        assert "dependency_violations must be true or false" in json.load(excinfo.value)["error"]
    assert control(endpoint, "GET", "/_realism/config")["dependency_violations"] is True


def test_revoked_rules_and_deleted_groups_take_their_tags_with_them(aws):
    ec2 = aws("ec2")
    vpc, _, _ = network(ec2)
    sg = group(ec2, vpc, "tagged")
    spec = [{"ResourceType": "security-group-rule", "Tags": [{"Key": "slipway:stack", "Value": "t"}]}]
    perm = {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}
    one = ec2.authorize_security_group_ingress(GroupId=sg, IpPermissions=[perm], TagSpecifications=spec)
    two = ec2.authorize_security_group_ingress(
        GroupId=sg, IpPermissions=[dict(perm, FromPort=80, ToPort=80)], TagSpecifications=spec)
    first, second = one["SecurityGroupRules"][0]["SecurityGroupRuleId"], two["SecurityGroupRules"][0]["SecurityGroupRuleId"]

    def tagged():
        tags = ec2.describe_tags(Filters=[{"Name": "key", "Values": ["slipway:stack"]}])["Tags"]
        return {t["ResourceId"] for t in tags}

    assert {first, second} <= tagged()
    ec2.revoke_security_group_ingress(GroupId=sg, SecurityGroupRuleIds=[first])
    assert first not in tagged() and second in tagged()
    ec2.delete_security_group(GroupId=sg)
    assert second not in tagged()
