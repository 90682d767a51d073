"""Fixes where moto 5.2.5 answers differently from AWS in ways slipway can see.

Each patch is small and names the AWS behaviour it restores.
"""

from __future__ import annotations

from typing import Any


def _patch_security_group_rule_description() -> None:
    """DescribeSecurityGroupRules reports the description of a rule whose
    source is another security group (AWS keeps it on the group pair); moto
    only looks at the CIDR range's description."""
    from moto.ec2.models.security_groups import SecurityGroupRule

    def description(self: Any) -> str | None:
        return self.ip_range.get("Description") or (self.source_group or {}).get("Description")

    SecurityGroupRule.description = property(description)


def _patch_eks_tagging() -> None:
    """EKS TagResource / UntagResource / ListTagsForResource accept the ARNs
    of Fargate profiles and access entries, not only of clusters; moto only
    knows clusters (access entries are the layer's own, see eks_api.py)."""
    from moto.eks.models import EKSBackend

    def tagged(backend: Any, arn: str) -> dict[str, str] | None:
        for cluster in backend.clusters.values():
            for profile in cluster.fargate_profiles.values():
                if profile.fargate_profile_arn == arn:
                    return profile.tags
            for entry in getattr(cluster, "_rl_access_entries", {}).values():
                if entry.get("accessEntryArn") == arn:
                    return entry.setdefault("tags", {})
        return None

    original_tag = EKSBackend.tag_resource
    original_untag = EKSBackend.untag_resource
    original_list = EKSBackend.list_tags_for_resource

    def tag_resource(self: Any, resource_arn: str, tags: dict[str, str]) -> None:
        found = tagged(self, resource_arn)
        if found is None:
            return original_tag(self, resource_arn, tags)
        found.update(tags)

    def untag_resource(self: Any, resource_arn: str, tag_keys: list[str]) -> None:
        found = tagged(self, resource_arn)
        if found is None:
            return original_untag(self, resource_arn, tag_keys)
        for k in tag_keys if isinstance(tag_keys, list) else [tag_keys]:
            found.pop(k, None)

    def list_tags_for_resource(self: Any, resource_arn: str) -> dict[str, str]:
        found = tagged(self, resource_arn)
        if found is None:
            return original_list(self, resource_arn)
        return found

    EKSBackend.tag_resource = tag_resource
    EKSBackend.untag_resource = untag_resource
    EKSBackend.list_tags_for_resource = list_tags_for_resource


_THUMBPRINT_CONSTRAINT = (
    "Member must satisfy constraint: "
    "[Member must have length less than or equal to 40, Member must have length greater than or equal to 40]"
)


def _patch_oidc_thumbprint_length() -> None:
    """IAM thumbprints are exactly 40 characters (the IAM model's
    thumbprintType: min 40, max 40), in CreateOpenIDConnectProvider and
    UpdateOpenIDConnectProviderThumbprint alike; moto only rejects longer
    ones, and only on create. (boto3 checks this client-side; the Rust SDK
    does not.)"""
    from moto.iam.exceptions import ValidationError
    from moto.iam.models import IAMBackend, OpenIDConnectProvider

    original_validate = OpenIDConnectProvider._validate
    original_update = IAMBackend.update_open_id_connect_provider_thumbprint

    def validate(self: Any, url: str, thumbprint_list: list[str], client_id_list: list[str]) -> None:
        lengths = [len(t) for t in thumbprint_list]
        if any(n < 40 for n in lengths) and not any(n > 40 for n in lengths):  # moto reports those
            self._errors.append(self._format_error(key="thumbprintList", value=thumbprint_list,
                                                   constraint=_THUMBPRINT_CONSTRAINT))
        return original_validate(self, url, thumbprint_list, client_id_list)

    def update_thumbprint(self: Any, arn: str, thumbprint_list: list[str]) -> None:
        if any(len(t) != 40 for t in thumbprint_list):
            raise ValidationError(
                f'1 validation error detected: Value "{thumbprint_list}" at "thumbprintList" '
                f"failed to satisfy constraint: {_THUMBPRINT_CONSTRAINT}"
            )
        return original_update(self, arn, thumbprint_list)

    OpenIDConnectProvider._validate = validate
    IAMBackend.update_open_id_connect_provider_thumbprint = update_thumbprint


def _patch_ecr_images() -> None:
    """ECR images as ECR keeps them. The digest is `sha256:` + the hex SHA-256
    of the exact manifest bytes (moto hashes the layer digests, or makes one
    up, or takes the client's `imageDigest` as it is), so one manifest always
    has one digest; a client's `imageDigest` that differs is
    ImageDigestDoesNotMatchException. PutImage of a manifest already there
    adds the tag to that image (one image, several tags); a tag already on
    that image is ImageAlreadyExistsException. A tag on another image moves
    to the new one in a MUTABLE repository (the other image stays, untagged
    if that was its last tag -- moto deletes it) and is
    ImageTagAlreadyExistsException in an IMMUTABLE one (moto raises
    ImageAlreadyExistsException); exclusion filters are wildcards. An unknown
    repository is RepositoryNotFoundException and a manifest that is not JSON
    InvalidParameterException (moto: a 500). BatchGetImage answers each image
    with the imageId asked for (moto: the image's last tag) and failures with
    the imageId asked for."""
    import fnmatch
    import hashlib
    import json

    from moto.core.exceptions import ServiceException
    from moto.ecr import models as m
    from moto.ecr.exceptions import ImageAlreadyExistsException, InvalidParameterException, RepositoryNotFoundException

    class ImageTagAlreadyExistsException(ServiceException):
        code = "ImageTagAlreadyExistsException"

    class ImageDigestDoesNotMatchException(ServiceException):
        code = "ImageDigestDoesNotMatchException"

    Backend, Image, Mutability = m.ECRBackend, m.Image, m.RepoTagMutability

    def digest_of(manifest: str) -> str:
        return "sha256:" + hashlib.sha256(manifest.encode("utf-8")).hexdigest()

    def create_digest(self: Any) -> None:
        self._image_digest = digest_of(self.image_manifest)

    def tag_immutable(repo: Any, tag: str) -> bool:
        excluded = any(fnmatch.fnmatchcase(tag, f.get("filter", ""))
                       for f in repo.image_tag_mutability_exclusion_filters or [])
        mode = repo.image_tag_mutability
        if mode == Mutability.IMMUTABLE_WITH_EXCLUSION:
            return not excluded
        if mode == Mutability.MUTABLE_WITH_EXCLUSION:
            return excluded
        return mode == Mutability.IMMUTABLE

    def put_image(self: Any, repository_name: str, image_manifest: str, image_tag: str | None,
                  image_manifest_mediatype: str | None = None, digest: str | None = None) -> Any:
        repo = self.repositories.get(repository_name)
        if repo is None:
            raise RepositoryNotFoundException(repository_name, self.account_id)
        try:
            parsed = json.loads(image_manifest)
        except (TypeError, ValueError):
            raise InvalidParameterException(
                "Invalid parameter at 'ImageManifest' failed to satisfy constraint: 'Invalid JSON syntax'") from None
        if not image_manifest_mediatype:
            if not isinstance(parsed, dict) or "mediaType" not in parsed:
                raise InvalidParameterException("image manifest mediatype not provided in manifest or parameter")
            image_manifest_mediatype = parsed["mediaType"]
        computed = digest_of(image_manifest)
        if digest and digest != computed:
            raise ImageDigestDoesNotMatchException(
                "The specified image digest does not match the digest that Amazon ECR calculated for the image.")
        image = next((i for i in repo.images if i.get_image_digest() == computed), None)
        if image is not None and (image_tag in image.image_tags or (not image_tag and not image.image_tags)):
            raise ImageAlreadyExistsException(registry_id=repo.registry_id, image_tag=image_tag or "null",
                                              digest=computed, repository_name=repository_name)
        if image_tag:
            holder = next((i for i in repo.images if image_tag in i.image_tags and i is not image), None)
            if holder is not None:
                if tag_immutable(repo, image_tag):
                    raise ImageTagAlreadyExistsException(
                        f"The image tag '{image_tag}' already exists in the '{repository_name}' repository "
                        "and cannot be overwritten because the repository is immutable.")
                holder.remove_tag(image_tag)  # the other image stays, untagged if that was its last tag
                if not holder.image_tags:
                    holder.image_tag = None
        if image is None:
            image = Image(self.account_id, image_tag, image_manifest, repository_name, image_manifest_mediatype,
                          computed, registry_id=repo.registry_id)
            repo.images.append(image)
        else:
            image.update_tag(image_tag)
        return image

    orig_batch_get = Backend.batch_get_image

    def batch_get_image(self: Any, repository_name: str, registry_id: str | None = None,
                        image_ids: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        result = orig_batch_get(self, repository_name, registry_id, image_ids)  # moto's errors
        repo = self.repositories[repository_name]
        images, failures = [], []
        for wanted in image_ids or []:
            tag, dig = wanted.get("imageTag"), wanted.get("imageDigest")
            found = next((i for i in repo.images if (not tag or tag in i.image_tags)
                          and (not dig or i.get_image_digest() == dig)), None)
            if found is None:
                failures.append({"imageId": dict(wanted), "failureCode": "ImageNotFound",
                                 "failureReason": "Requested image not found"})
                continue
            images.append({"registryId": repo.registry_id, "repositoryName": repository_name,
                           "imageId": {**({"imageTag": tag} if tag else {}), "imageDigest": found.get_image_digest()},
                           "imageManifest": found.image_manifest,
                           "imageManifestMediaType": found.image_manifest_media_type})
        result.update(images=images, failures=failures)
        return result

    Image._create_digest = create_digest
    Backend.put_image = put_image
    Backend.batch_get_image = batch_get_image


def _patch_iam_list_instance_profile_tags() -> None:
    """IAM ListInstanceProfileTags (moto: NotImplementedError, a 500). Served
    on moto's IamResponse, so moto's serializer writes the IAM model's Query
    XML (`ListInstanceProfileTagsResult`: `Tags` of `Key`/`Value`,
    `IsTruncated`, `Marker` only when truncated) and moto's IAM errors
    apply: an unknown profile is moto's NoSuchEntity (404), as in
    GetInstanceProfile. The tags are moto's `InstanceProfile.tags` (set by
    CreateInstanceProfile and TagInstanceProfile), sorted by key as the IAM
    documentation says; `MaxItems` is 1-1000 (default 100), `Marker` is the
    opaque token of the previous page (here: the next index)."""
    from moto.core.responses import ActionResult
    from moto.iam.exceptions import ValidationError
    from moto.iam.responses import IamResponse

    def list_instance_profile_tags(self: Any) -> ActionResult:
        name = self._get_param("InstanceProfileName")
        marker = self._get_param("Marker")
        max_items = self._get_param("MaxItems", 100)
        try:
            max_items = int(max_items)
        except (TypeError, ValueError):
            raise ValidationError(f"1 validation error detected: Value '{max_items}' at 'maxItems' "
                                  "failed to satisfy constraint: Member must be an integer") from None
        if max_items < 1:
            raise ValidationError(f"1 validation error detected: Value '{max_items}' at 'maxItems' "
                                  "failed to satisfy constraint: Member must have value greater than or equal to 1")
        if max_items > 1000:
            raise ValidationError(f"1 validation error detected: Value '{max_items}' at 'maxItems' "
                                  "failed to satisfy constraint: Member must have value less than or equal to 1000")
        profile = self.backend.get_instance_profile(name)  # NoSuchEntity
        tags = sorted(profile.tags, key=lambda t: t["Key"])
        if marker is None:
            start = 0
        else:
            start = int(marker) if str(marker).isdigit() else -1
            if not 0 <= start <= len(tags):
                raise ValidationError("Invalid Marker.")
        end = start + max_items
        result: dict[str, Any] = {"Tags": [{"Key": t["Key"], "Value": t["Value"]} for t in tags[start:end]],
                                  "IsTruncated": end < len(tags)}
        if end < len(tags):
            result["Marker"] = str(end)
        return ActionResult(result)

    IamResponse.list_instance_profile_tags = list_instance_profile_tags


_applied = False


def _patch_elbv2_describe_tags_of_missing() -> None:
    """ELBv2 DescribeTags of an ARN that does not exist (a load balancer or
    target group deleted since it was listed) fails the whole call with
    LoadBalancerNotFound / TargetGroupNotFound / ListenerNotFound /
    RuleNotFound, as the ELBv2 API reference documents; moto answers empty
    tags instead."""
    from moto.elbv2.models import ELBv2Backend

    original = ELBv2Backend.describe_tags

    def describe_tags(self: Any, resource_arns: list[str]) -> dict[str, dict[str, str]]:
        for arn in resource_arns:
            self._get_resource_by_arn(arn)
        return original(self, resource_arns)

    ELBv2Backend.describe_tags = describe_tags


def _patch_s3_policy_conditions() -> None:
    """S3 evaluates a bucket policy statement only when its Condition holds;
    moto ignores conditions, so a statement that denies requests *without*
    TLS (`"Bool": {"aws:SecureTransport": "false"}`, what every hardened
    state bucket has) denies everything. The local AWS stands in for AWS's
    HTTPS endpoints: its requests count as made over TLS, and a statement
    whose only condition is that Bool on false never applies. Statements
    with other conditions are evaluated as moto does."""
    import json

    from moto.s3.models import FakeBucket

    original = FakeBucket.get_permission

    def without_tls_denials(doc: str) -> str:
        policy = json.loads(doc)
        statements = policy.get("Statement", [])
        if isinstance(statements, dict):
            statements = [statements]

        def tls_only(st: dict[str, Any]) -> bool:
            cond = st.get("Condition") or {}
            flag = (cond.get("Bool") or {}).get("aws:SecureTransport")
            return list(cond) == ["Bool"] and list(cond["Bool"]) == ["aws:SecureTransport"] and str(flag).lower() == "false"

        policy["Statement"] = [st for st in statements if not tls_only(st)]
        return json.dumps(policy)

    def get_permission(self: Any, action: str, resource: str) -> Any:
        from moto.iam.access_control import IAMPolicy, PermissionResult

        if self.policy is None:
            return original(self, action, resource)
        # Evaluated on a copy: the bucket's stored policy is never touched
        # (requests run concurrently).
        stripped = without_tls_denials(self.policy.decode())
        if not json.loads(stripped)["Statement"]:
            return PermissionResult.NEUTRAL
        return IAMPolicy(stripped).is_action_permitted(action, resource)

    FakeBucket.get_permission = get_permission


def _patch_s3_get_bucket_versioning_root() -> None:
    """GetBucketVersioning answers a `VersioningConfiguration` document, as
    the S3 API reference shows; moto names its root
    `GetBucketVersioningResponse`, which strict clients (the Rust SDK)
    refuse."""
    from moto.s3.responses import S3Response

    def get_bucket_versioning(self: Any) -> Any:
        status = self.backend.get_bucket_versioning(self.bucket_name)
        inner = f"<Status>{status}</Status>" if status else ""
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<VersioningConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">{inner}</VersioningConfiguration>'
        )
        return 200, {"Content-Type": "application/xml"}, body

    S3Response.get_bucket_versioning = get_bucket_versioning


def apply() -> None:
    global _applied
    if not _applied:
        _patch_security_group_rule_description()
        _patch_eks_tagging()
        _patch_oidc_thumbprint_length()
        _patch_ecr_images()
        _patch_iam_list_instance_profile_tags()
        _patch_elbv2_describe_tags_of_missing()
        _patch_s3_policy_conditions()
        _patch_s3_get_bucket_versioning_root()
        _applied = True
