"""NAT gateway, EC2 instance and ELBv2 load balancer lifecycles."""

from __future__ import annotations

from conftest import wait_for

AMI_PARAM = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"


def network(ec2):
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    a = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24", AvailabilityZone="ap-south-1a")["Subnet"]["SubnetId"]
    b = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.2.0/24", AvailabilityZone="ap-south-1b")["Subnet"]["SubnetId"]
    return vpc, a, b


def test_nat_gateway_pending_available_deleting_deleted(aws, realism):
    realism({"time_scale": 0.02})  # create 1.8 s, delete 1.2 s
    ec2 = aws("ec2")
    _, subnet, _ = network(ec2)
    eip = ec2.allocate_address(Domain="vpc")["AllocationId"]
    nat = ec2.create_nat_gateway(SubnetId=subnet, AllocationId=eip)["NatGateway"]
    assert nat["State"] == "pending"
    nat_id = nat["NatGatewayId"]

    def state():
        return ec2.describe_nat_gateways(NatGatewayIds=[nat_id])["NatGateways"][0]["State"]

    assert state() == "pending"
    pending = ec2.describe_nat_gateways(Filters=[{"Name": "state", "Values": ["pending"]}])["NatGateways"]
    assert [n["NatGatewayId"] for n in pending] == [nat_id]
    wait_for(state, lambda s: s == "available")
    ec2.delete_nat_gateway(NatGatewayId=nat_id)
    assert state() == "deleting"
    wait_for(state, lambda s: s == "deleted")


def test_instance_pending_running_shutting_down_terminated(aws, realism):
    realism({"time_scale": 0.05})  # start 1.5 s, terminate 1.5 s
    ec2, ssm = aws("ec2"), aws("ssm")
    _, subnet, _ = network(ec2)
    ami = ssm.get_parameter(Name=AMI_PARAM)["Parameter"]["Value"]
    launched = ec2.run_instances(ImageId=ami, InstanceType="t3.micro", MinCount=1, MaxCount=1, SubnetId=subnet)
    inst = launched["Instances"][0]
    assert inst["State"] == {"Code": 0, "Name": "pending"}
    iid = inst["InstanceId"]

    def state():
        return ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["State"]

    assert state() == {"Code": 0, "Name": "pending"}
    filtered = ec2.describe_instances(Filters=[{"Name": "instance-state-name", "Values": ["pending"]}])["Reservations"]
    assert [i["InstanceId"] for r in filtered for i in r["Instances"]] == [iid]
    wait_for(state, lambda s: s == {"Code": 16, "Name": "running"})

    term = ec2.terminate_instances(InstanceIds=[iid])["TerminatingInstances"][0]
    assert term["CurrentState"] == {"Code": 32, "Name": "shutting-down"}
    assert term["PreviousState"] == {"Code": 16, "Name": "running"}
    assert state() == {"Code": 32, "Name": "shutting-down"}
    wait_for(state, lambda s: s == {"Code": 48, "Name": "terminated"})
    # terminating again is a no-op, as on AWS
    again = ec2.terminate_instances(InstanceIds=[iid])["TerminatingInstances"][0]
    assert again["PreviousState"] == {"Code": 48, "Name": "terminated"}
    assert state() == {"Code": 48, "Name": "terminated"}


def test_load_balancer_provisioning_then_active(aws, realism):
    realism({"time_scale": 0.01})  # 1.2 s
    ec2, elb = aws("ec2"), aws("elbv2")
    _, a, b = network(ec2)
    lb = elb.create_load_balancer(Name="web", Subnets=[a, b], Type="application")["LoadBalancers"][0]
    assert lb["State"]["Code"] == "provisioning"

    def state():
        return elb.describe_load_balancers(Names=["web"])["LoadBalancers"][0]["State"]["Code"]

    assert state() == "provisioning"
    wait_for(state, lambda s: s == "active")


def test_instance_stop_and_start(aws, realism):
    realism({"time_scale": 0.05})  # 1.5 s per phase
    ec2, ssm = aws("ec2"), aws("ssm")
    _, subnet, _ = network(ec2)
    ami = ssm.get_parameter(Name=AMI_PARAM)["Parameter"]["Value"]
    iid = ec2.run_instances(ImageId=ami, InstanceType="t3.micro", MinCount=1, MaxCount=1, SubnetId=subnet)["Instances"][0]["InstanceId"]

    def state():
        return ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["State"]["Name"]

    wait_for(state, lambda s: s == "running")
    assert ec2.stop_instances(InstanceIds=[iid])["StoppingInstances"][0]["CurrentState"]["Name"] == "stopping"
    assert state() == "stopping"
    wait_for(state, lambda s: s == "stopped")
    assert ec2.start_instances(InstanceIds=[iid])["StartingInstances"][0]["PreviousState"]["Name"] == "stopped"
    assert state() == "pending"
    wait_for(state, lambda s: s == "running")
