#!/usr/bin/env python3
"""A real S3 client (boto3) driving a Shoal cluster's S3 endpoints, for the cluster tests
(cluster-tests/tests/cluster/objects.rs). Usage:

    s3_client.py SCENARIO '{"endpoints": [...], "key": ..., "secret": ..., ...}'

Each scenario asserts what its test promises and exits 0, or raises (exit 1) with the reason.
"""

import datetime
import hashlib
import io
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError


def client(endpoint, key, secret):
    return boto3.client(
        "s3",
        endpoint_url="http://" + endpoint,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"},
            signature_version="s3v4",
            retries={"max_attempts": 8, "mode": "standard"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


def error_code(fn):
    """The S3 error code `fn` fails with (None: it succeeded)."""
    try:
        fn()
    except ClientError as e:
        return e.response["Error"]["Code"]
    return None


def expect_code(fn, code):
    got = error_code(fn)
    assert got == code, f"expected {code}, got {got}"


def http(method, url, data=None, headers=None):
    """A plain HTTP request: (status, body bytes)."""
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def body_of(c, bucket, key, **kw):
    return c.get_object(Bucket=bucket, Key=key, **kw)["Body"].read()


def round_trips(a):
    """Sizes round trip through one node and read back through the others, checked by hash;
    ranges; ETag, Content-Type, Cache-Control, Accept-Ranges; 304 on If-None-Match and
    If-Modified-Since; errors for missing buckets and keys and bad ranges."""
    eps = a["endpoints"]
    c1, c2, c3 = (client(e, a["key"], a["secret"]) for e in eps[:3])
    c1.create_bucket(Bucket="rtrip")
    mib = 1024 * 1024
    for size in [0, 1, mib - 1, mib, mib + 1, a.get("large", 20 * mib)]:
        data = os.urandom(size)
        key = f"obj-{size}"
        put = c1.put_object(Bucket="rtrip", Key=key, Body=data, ContentType="application/x-test")
        assert put["ETag"] == '"' + hashlib.md5(data).hexdigest() + '"', f"ETag of {size} B: {put['ETag']}"
        for c in (c2, c3):
            got = body_of(c, "rtrip", key)
            assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest(), f"{size} B read back differs"
        head = c3.head_object(Bucket="rtrip", Key=key)
        assert head["ContentLength"] == size, head
        assert head["ContentType"] == "application/x-test", head
        assert head["ResponseMetadata"]["HTTPHeaders"].get("accept-ranges") == "bytes", head
    # Overwrite: the new body replaces the old one whole.
    c1.put_object(Bucket="rtrip", Key="obj-1", Body=b"second")
    assert body_of(c2, "rtrip", "obj-1") == b"second"
    # Ranges, across chunk boundaries.
    data = os.urandom(3 * mib + 5)
    c2.put_object(Bucket="rtrip", Key="ranged", Body=data, CacheControl="max-age=60")
    for first, last in [(0, 0), (10, 99), (mib - 3, mib + 3), (2 * mib, 3 * mib + 4)]:
        r = c3.get_object(Bucket="rtrip", Key="ranged", Range=f"bytes={first}-{last}")
        assert r["Body"].read() == data[first : last + 1], f"range {first}-{last}"
        assert r["ContentRange"] == f"bytes {first}-{last}/{len(data)}", r["ContentRange"]
        assert r["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert c1.get_object(Bucket="rtrip", Key="ranged", Range="bytes=-5")["Body"].read() == data[-5:]
    assert c1.head_object(Bucket="rtrip", Key="ranged")["CacheControl"] == "max-age=60"
    expect_code(lambda: c1.get_object(Bucket="rtrip", Key="ranged", Range=f"bytes={len(data)}-"), "InvalidRange")
    # Conditional GETs.
    etag = c1.head_object(Bucket="rtrip", Key="ranged")["ETag"]
    expect_code(lambda: c2.get_object(Bucket="rtrip", Key="ranged", IfNoneMatch=etag), "304")
    assert len(c2.get_object(Bucket="rtrip", Key="ranged", IfNoneMatch='"other"')["Body"].read()) == len(data)
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
    earlier = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)
    expect_code(lambda: c3.get_object(Bucket="rtrip", Key="ranged", IfModifiedSince=later), "304")
    assert len(c3.get_object(Bucket="rtrip", Key="ranged", IfModifiedSince=earlier)["Body"].read()) == len(data)
    # Errors.
    expect_code(lambda: c1.get_object(Bucket="rtrip", Key="nope"), "NoSuchKey")
    expect_code(lambda: c1.get_object(Bucket="nobucket", Key="x"), "NoSuchBucket")
    expect_code(lambda: c1.put_object(Bucket="nobucket", Key="x", Body=b"x"), "NoSuchBucket")
    expect_code(lambda: c2.create_bucket(Bucket="rtrip"), "BucketAlreadyOwnedByYou")


def listing(a):
    """ListObjectsV2 with prefix, delimiter and pagination; CopyObject; DeleteObjects;
    DeleteBucket only when empty; ListBuckets."""
    eps = a["endpoints"]
    c1, c2, c3 = (client(e, a["key"], a["secret"]) for e in eps[:3])
    c1.create_bucket(Bucket="lst")
    keys = ["a/1", "a/2", "a/b/3", "b/1", "c", "d", "e/1", "e/2", "f"]
    for k in keys:
        c2.put_object(Bucket="lst", Key=k, Body=k.encode())
    everything = [o["Key"] for o in c3.list_objects_v2(Bucket="lst").get("Contents", [])]
    assert everything == sorted(keys), everything
    r = c1.list_objects_v2(Bucket="lst", Delimiter="/")
    assert [o["Key"] for o in r.get("Contents", [])] == ["c", "d", "f"], r
    assert [p["Prefix"] for p in r.get("CommonPrefixes", [])] == ["a/", "b/", "e/"], r
    r = c1.list_objects_v2(Bucket="lst", Prefix="a/", Delimiter="/")
    assert [o["Key"] for o in r.get("Contents", [])] == ["a/1", "a/2"], r
    assert [p["Prefix"] for p in r.get("CommonPrefixes", [])] == ["a/b/"], r
    # Pages of 2, with and without a delimiter.
    for delimiter, want in [("", sorted(keys)), ("/", ["a/", "b/", "c", "d", "e/", "f"])]:
        seen, token, pages = [], None, 0
        while True:
            kw = {"Bucket": "lst", "MaxKeys": 2, "Delimiter": delimiter}
            if token:
                kw["ContinuationToken"] = token
            r = c2.list_objects_v2(**kw)
            pages += 1
            page = [o["Key"] for o in r.get("Contents", [])] + [p["Prefix"] for p in r.get("CommonPrefixes", [])]
            assert len(page) <= 2, page
            seen += page
            if not r["IsTruncated"]:
                break
            token = r["NextContinuationToken"]
        assert sorted(seen) == want, (delimiter, seen)
        assert pages == (len(want) + 1) // 2, (delimiter, pages)
    # Copy (into another bucket: another partition's replicas get the chunks).
    c1.create_bucket(Bucket="lst2")
    big = os.urandom(2 * 1024 * 1024 + 7)
    c1.put_object(Bucket="lst", Key="big", Body=big, ContentType="image/png")
    c2.copy_object(Bucket="lst2", Key="copy", CopySource={"Bucket": "lst", "Key": "big"})
    assert body_of(c3, "lst2", "copy") == big
    assert c3.head_object(Bucket="lst2", Key="copy")["ContentType"] == "image/png"
    expect_code(lambda: c2.copy_object(Bucket="lst2", Key="x", CopySource={"Bucket": "lst", "Key": "none"}), "NoSuchKey")
    # Batch delete, then the bucket is empty and may go.
    expect_code(lambda: c1.delete_bucket(Bucket="lst"), "BucketNotEmpty")
    r = c3.delete_objects(Bucket="lst", Delete={"Objects": [{"Key": k} for k in keys + ["big", "never"]]})
    assert sorted(d["Key"] for d in r.get("Deleted", [])) == sorted(keys + ["big", "never"]), r
    assert not r.get("Errors"), r
    assert c1.list_objects_v2(Bucket="lst").get("KeyCount") == 0
    names = [b["Name"] for b in c2.list_buckets()["Buckets"]]
    assert "lst" in names and "lst2" in names, names
    c1.delete_bucket(Bucket="lst")
    expect_code(lambda: c2.head_bucket(Bucket="lst"), "404")
    names = [b["Name"] for b in c3.list_buckets()["Buckets"]]
    assert "lst" not in names, names


def presigned(a):
    """Pre-signed GET and PUT URLs work on another node than the one that made the object;
    expired and tampered ones are refused."""
    eps = a["endpoints"]
    c1 = client(eps[0], a["key"], a["secret"])
    c1.create_bucket(Bucket="pre")
    data = os.urandom(100_000)
    c1.put_object(Bucket="pre", Key="doc", Body=data)
    # GET through node 2 and 3, signed for their endpoints.
    for ep in eps[1:3]:
        url = client(ep, a["key"], a["secret"]).generate_presigned_url(
            "get_object", Params={"Bucket": "pre", "Key": "doc"}, ExpiresIn=300
        )
        status, body = http("GET", url)
        assert status == 200 and body == data, f"pre-signed GET on {ep}: {status}"
    # PUT through node 3, read back through node 2.
    c3 = client(eps[2], a["key"], a["secret"])
    url = c3.generate_presigned_url("put_object", Params={"Bucket": "pre", "Key": "up"}, ExpiresIn=300)
    status, body = http("PUT", url, data=b"uploaded with a pre-signed URL")
    assert status == 200, f"pre-signed PUT: {status} {body!r}"
    assert body_of(client(eps[1], a["key"], a["secret"]), "pre", "up") == b"uploaded with a pre-signed URL"
    # Tampered: another key, another expiry, another signature: all refused, nothing stored.
    good = client(eps[1], a["key"], a["secret"]).generate_presigned_url(
        "get_object", Params={"Bucket": "pre", "Key": "doc"}, ExpiresIn=300
    )
    tampered = [
        good.replace("/pre/doc?", "/pre/up?"),
        good.replace("X-Amz-Expires=300", "X-Amz-Expires=3000"),
        good[:-4] + ("0000" if not good.endswith("0000") else "1111"),
    ]
    for url in tampered:
        status, body = http("GET", url)
        assert status == 403 and b"SignatureDoesNotMatch" in body, f"tampered URL answered {status}: {body[:200]!r}"
    put_url = c3.generate_presigned_url("put_object", Params={"Bucket": "pre", "Key": "up2"}, ExpiresIn=300)
    status, _ = http("PUT", put_url.replace("/pre/up2?", "/pre/up3?"), data=b"x")
    assert status == 403, status
    expect_code(lambda: c1.head_object(Bucket="pre", Key="up3"), "404")
    # Expired: a one-second URL is refused once the second has passed.
    url = client(eps[1], a["key"], a["secret"]).generate_presigned_url(
        "get_object", Params={"Bucket": "pre", "Key": "doc"}, ExpiresIn=1
    )
    deadline = time.time() + 10
    while True:
        status, body = http("GET", url)
        if status == 403:
            assert b"AccessDenied" in body or b"Expired" in body, body[:300]
            break
        assert status == 200, status
        assert time.time() < deadline, "a one-second pre-signed URL still works after 10 s"
        time.sleep(0.2)


def access(a):
    """A private bucket serves only its owner; a public-read one serves GET and HEAD to
    unsigned requests but not writes; another user's key and a revoked key are refused."""
    eps = a["endpoints"]
    owner = client(eps[0], a["key"], a["secret"])
    other = client(eps[1], a["other_key"], a["other_secret"])
    owner.create_bucket(Bucket="private")
    owner.create_bucket(Bucket="public", ACL="public-read")
    owner.put_object(Bucket="private", Key="k", Body=b"secret")
    owner.put_object(Bucket="public", Key="k", Body=b"open", ContentType="text/plain")
    for ep in eps[:3]:
        status, body = http("GET", f"http://{ep}/public/k")
        assert status == 200 and body == b"open", (ep, status, body)
        status, _ = http("HEAD", f"http://{ep}/public/k")
        assert status == 200, status
        status, body = http("GET", f"http://{ep}/private/k")
        assert status == 403 and b"AccessDenied" in body, (status, body)
    req = urllib.request.Request(f"http://{eps[1]}/public/k", method="GET")
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.headers["Cache-Control"].startswith("public, max-age="), r.headers["Cache-Control"]
    status, _ = http("PUT", f"http://{eps[0]}/public/new", data=b"x")
    assert status == 403, f"an unsigned PUT to a public bucket answered {status}"
    status, _ = http("DELETE", f"http://{eps[0]}/public/k")
    assert status == 403, f"an unsigned DELETE answered {status}"
    expect_code(lambda: other.get_object(Bucket="private", Key="k"), "AccessDenied")
    expect_code(lambda: other.put_object(Bucket="public", Key="k", Body=b"x"), "AccessDenied")
    assert body_of(other, "public", "k") == b"open"
    assert body_of(owner, "private", "k") == b"secret"
    names = [b["Name"] for b in other.list_buckets()["Buckets"]]
    assert names == [], names


def revoked(a):
    """A revoked key is refused on every node."""
    for ep in a["endpoints"][:3]:
        c = client(ep, a["key"], a["secret"])
        expect_code(lambda: c.list_buckets(), "InvalidAccessKeyId")


def multipart(a):
    """A multipart upload through boto3's transfer manager (parallel parts), read back whole
    and by ranges across part boundaries through other nodes, with S3's multipart ETag; then
    the low-level calls: ListParts, nothing visible before completion, InvalidPart, abort."""
    from boto3.s3.transfer import TransferConfig

    eps = a["endpoints"]
    c1, c2, c3 = (client(e, a["key"], a["secret"]) for e in eps[:3])
    c1.create_bucket(Bucket="multi")
    mib = 1024 * 1024
    part = 8 * mib
    size = a["size"]
    data = os.urandom(size)
    cfg = TransferConfig(multipart_threshold=part, multipart_chunksize=part, max_concurrency=4)
    c1.upload_fileobj(io.BytesIO(data), "multi", "big", Config=cfg)
    parts = [data[i : i + part] for i in range(0, size, part)]
    want = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest() + f"-{len(parts)}"
    head = c2.head_object(Bucket="multi", Key="big")
    assert head["ContentLength"] == size, head
    assert head["ETag"] == f'"{want}"', (head["ETag"], want)
    got = body_of(c2, "multi", "big")
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest(), "multipart object read back differs"
    del got
    r = c3.get_object(Bucket="multi", Key="big", Range=f"bytes={part - 10}-{part + 10}")
    assert r["Body"].read() == data[part - 10 : part + 11]
    # Low level.
    up = c1.create_multipart_upload(Bucket="multi", Key="low", ContentType="text/plain")["UploadId"]
    e1 = c2.upload_part(Bucket="multi", Key="low", UploadId=up, PartNumber=1, Body=b"a" * (5 * mib))["ETag"]
    e2 = c3.upload_part(Bucket="multi", Key="low", UploadId=up, PartNumber=2, Body=b"tail")["ETag"]
    listed = c1.list_parts(Bucket="multi", Key="low", UploadId=up)["Parts"]
    assert [(p["PartNumber"], p["Size"]) for p in listed] == [(1, 5 * mib), (2, 4)], listed
    expect_code(lambda: c1.head_object(Bucket="multi", Key="low"), "404")
    bad = {"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": '"00"'}]}
    expect_code(
        lambda: c1.complete_multipart_upload(Bucket="multi", Key="low", UploadId=up, MultipartUpload=bad),
        "InvalidPart",
    )
    good = {"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]}
    c2.complete_multipart_upload(Bucket="multi", Key="low", UploadId=up, MultipartUpload=good)
    assert body_of(c3, "multi", "low") == b"a" * (5 * mib) + b"tail"
    assert c3.head_object(Bucket="multi", Key="low")["ContentType"] == "text/plain"
    expect_code(lambda: c1.list_parts(Bucket="multi", Key="low", UploadId=up), "NoSuchUpload")
    up = c1.create_multipart_upload(Bucket="multi", Key="gone")["UploadId"]
    c1.upload_part(Bucket="multi", Key="gone", UploadId=up, PartNumber=1, Body=b"x")
    c2.abort_multipart_upload(Bucket="multi", Key="gone", UploadId=up)
    expect_code(
        lambda: c1.upload_part(Bucket="multi", Key="gone", UploadId=up, PartNumber=2, Body=b"y"), "NoSuchUpload"
    )
    expect_code(lambda: c1.head_object(Bucket="multi", Key="gone"), "404")


def put(a):
    """Creates bucket `bucket` if asked, PUTs `size` random bytes as `name` through
    `endpoint`; prints their SHA-256."""
    c = client(a["endpoint"], a["key"], a["secret"])
    if a.get("create"):
        c.create_bucket(Bucket=a["bucket"])
    data = os.urandom(a["size"])
    c.put_object(Bucket=a["bucket"], Key=a["name"], Body=data)
    print(hashlib.sha256(data).hexdigest())


def put_many(a):
    """Creates bucket `bucket` and PUTs `count` objects of `size` random bytes through
    `endpoint`."""
    c = client(a["endpoint"], a["key"], a["secret"])
    c.create_bucket(Bucket=a["bucket"])
    for i in range(a["count"]):
        c.put_object(Bucket=a["bucket"], Key=f"obj-{i}", Body=os.urandom(a["size"]))


def get(a):
    """GETs `name` through `endpoint`; prints the SHA-256 of the body."""
    c = client(a["endpoint"], a["key"], a["secret"])
    print(hashlib.sha256(body_of(c, a["bucket"], a["name"])).hexdigest())


def delete(a):
    """DELETEs `name` through `endpoint`; then it is gone."""
    c = client(a["endpoint"], a["key"], a["secret"])
    c.delete_object(Bucket=a["bucket"], Key=a["name"])
    expect_code(lambda: c.head_object(Bucket=a["bucket"], Key=a["name"]), "404")


SCENARIOS = {
    f.__name__: f for f in [round_trips, listing, presigned, access, revoked, multipart, put, put_many, get, delete]
}

if __name__ == "__main__":
    SCENARIOS[sys.argv[1]](json.loads(sys.argv[2]))
