"""ECR images as ECR keeps them (realism/fidelity.py): digests are the sha256 of
the manifest bytes, re-tagging adds a tag, tag mutability errors."""

from __future__ import annotations

import hashlib
import json

import pytest
from botocore.exceptions import ClientError

MEDIA = "application/vnd.docker.distribution.manifest.v2+json"


def manifest(seed: str) -> str:
    layer = "sha256:" + hashlib.sha256(seed.encode()).hexdigest()
    return json.dumps({"schemaVersion": 2, "mediaType": MEDIA,
                       "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 7,
                                  "digest": "sha256:" + hashlib.sha256(b"config" + seed.encode()).hexdigest()},
                       "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                                   "size": 100, "digest": layer}]}, indent=3)


def digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def code(e: pytest.ExceptionInfo) -> str:
    return e.value.response["Error"]["Code"]


def repo(ecr, name="app", mutability="MUTABLE"):
    ecr.create_repository(repositoryName=name, imageTagMutability=mutability)
    return name


def put(ecr, name, text, tag=None, **kw):
    args = dict(repositoryName=name, imageManifest=text, imageManifestMediaType=MEDIA, **kw)
    if tag:
        args["imageTag"] = tag
    return ecr.put_image(**args)["image"]


def tags_by_digest(ecr, name):
    return {d["imageDigest"]: sorted(d.get("imageTags", [])) for d in ecr.describe_images(repositoryName=name)["imageDetails"]}


def test_digest_is_the_sha256_of_the_manifest_bytes(aws):
    ecr = aws("ecr")
    name = repo(ecr)
    text = manifest("a")
    img = put(ecr, name, text, "v1")
    assert img["imageId"] == {"imageTag": "v1", "imageDigest": digest(text)}
    # the same manifest elsewhere has the same digest; other bytes (same JSON) another one
    other = repo(ecr, "other")
    assert put(ecr, other, text, "x")["imageId"]["imageDigest"] == digest(text)
    compact = json.dumps(json.loads(text))
    assert put(ecr, other, compact, "y")["imageId"]["imageDigest"] == digest(compact) != digest(text)
    # BatchGetImage gives back the exact bytes, by tag and by digest
    got = ecr.batch_get_image(repositoryName=name, imageIds=[{"imageTag": "v1"}, {"imageDigest": digest(text)}])
    assert [i["imageId"] for i in got["images"]] == [{"imageTag": "v1", "imageDigest": digest(text)},
                                                    {"imageDigest": digest(text)}]
    assert all(i["imageManifest"] == text and i["imageManifestMediaType"] == MEDIA for i in got["images"])
    assert got["failures"] == []
    # a client digest that is not the manifest's is refused
    with pytest.raises(ClientError) as e:
        put(ecr, name, manifest("b"), "v2", imageDigest=digest(text))
    assert code(e) == "ImageDigestDoesNotMatchException"
    assert put(ecr, name, manifest("b"), "v2", imageDigest=digest(manifest("b")))["imageId"]["imageDigest"] == digest(manifest("b"))


def test_retag_adds_a_tag_to_the_same_image(aws):
    ecr = aws("ecr")
    name = repo(ecr, mutability="IMMUTABLE")
    text = manifest("a")
    put(ecr, name, text, "develop-1")
    again = put(ecr, name, text, "master-1")
    assert again["imageId"] == {"imageTag": "master-1", "imageDigest": digest(text)}
    assert tags_by_digest(ecr, name) == {digest(text): ["develop-1", "master-1"]}
    for tag in ("develop-1", "master-1"):
        d = ecr.describe_images(repositoryName=name, imageIds=[{"imageTag": tag}])["imageDetails"]
        assert [x["imageDigest"] for x in d] == [digest(text)]
        b = ecr.batch_get_image(repositoryName=name, imageIds=[{"imageTag": tag}])["images"]
        assert b[0]["imageId"] == {"imageTag": tag, "imageDigest": digest(text)} and b[0]["imageManifest"] == text
    d = ecr.describe_images(repositoryName=name, imageIds=[{"imageDigest": digest(text)}])["imageDetails"]
    assert sorted(d[0]["imageTags"]) == ["develop-1", "master-1"]
    # the same tag on the same manifest again: ImageAlreadyExistsException
    with pytest.raises(ClientError) as e:
        put(ecr, name, text, "master-1")
    assert code(e) == "ImageAlreadyExistsException"
    assert f"'{digest(text)}'" in e.value.response["Error"]["Message"]


def test_immutable_tag_on_another_digest_is_refused(aws):
    ecr = aws("ecr")
    name = repo(ecr, mutability="IMMUTABLE")
    a, b = manifest("a"), manifest("b")
    put(ecr, name, a, "v1")
    with pytest.raises(ClientError) as e:
        put(ecr, name, b, "v1")
    assert code(e) == "ImageTagAlreadyExistsException"
    assert e.value.response["Error"]["Message"] == (
        f"The image tag 'v1' already exists in the '{name}' repository and cannot be overwritten "
        "because the repository is immutable.")
    assert tags_by_digest(ecr, name) == {digest(a): ["v1"]}
    # retagging an existing image with a tag another image holds: refused too
    put(ecr, name, b, "v2")
    with pytest.raises(ClientError) as e:
        put(ecr, name, b, "v1")
    assert code(e) == "ImageTagAlreadyExistsException"
    assert tags_by_digest(ecr, name) == {digest(a): ["v1"], digest(b): ["v2"]}


def test_mutable_tag_moves_and_leaves_the_old_image_untagged(aws):
    ecr = aws("ecr")
    name = repo(ecr)
    a, b = manifest("a"), manifest("b")
    put(ecr, name, a, "latest")
    moved = put(ecr, name, b, "latest")
    assert moved["imageId"] == {"imageTag": "latest", "imageDigest": digest(b)}
    assert tags_by_digest(ecr, name) == {digest(a): [], digest(b): ["latest"]}
    got = ecr.batch_get_image(repositoryName=name, imageIds=[{"imageTag": "latest"}])["images"]
    assert [i["imageId"]["imageDigest"] for i in got] == [digest(b)] and got[0]["imageManifest"] == b
    d = ecr.describe_images(repositoryName=name, imageIds=[{"imageTag": "latest"}])["imageDetails"]
    assert [x["imageDigest"] for x in d] == [digest(b)]
    untagged = ecr.list_images(repositoryName=name, filter={"tagStatus": "UNTAGGED"})["imageIds"]
    assert untagged == [{"imageDigest": digest(a)}]
    # the old image is still there by digest, and can be tagged again (the tag moves back)
    assert ecr.batch_get_image(repositoryName=name, imageIds=[{"imageDigest": digest(a)}])["images"][0]["imageManifest"] == a
    put(ecr, name, a, "latest")
    assert tags_by_digest(ecr, name) == {digest(a): ["latest"], digest(b): []}
    # a tag that stays on another tagged image only leaves that image's other tags
    put(ecr, name, b, "keep")
    put(ecr, name, b, "latest")
    assert tags_by_digest(ecr, name) == {digest(a): [], digest(b): ["keep", "latest"]}


def test_lookups_of_missing_images_and_repositories(aws):
    ecr = aws("ecr")
    name = repo(ecr)
    put(ecr, name, manifest("a"), "v1")
    missing = digest("nothing")
    got = ecr.batch_get_image(repositoryName=name, imageIds=[{"imageTag": "nope"}, {"imageDigest": missing}])
    assert got["images"] == []
    assert [f["imageId"] for f in got["failures"]] == [{"imageTag": "nope"}, {"imageDigest": missing}]
    assert {f["failureCode"] for f in got["failures"]} == {"ImageNotFound"}
    with pytest.raises(ClientError) as e:
        ecr.describe_images(repositoryName=name, imageIds=[{"imageDigest": missing}])
    assert code(e) == "ImageNotFoundException"
    with pytest.raises(ClientError) as e:
        put(ecr, "no-such-repo", manifest("a"), "v1")
    assert code(e) == "RepositoryNotFoundException"
    with pytest.raises(ClientError) as e:
        put(ecr, name, "{not json", "v2")
    assert code(e) == "InvalidParameterException"
