"""Administration of the test object stores, with each cloud's own SDK (an independent client):
create a bucket or container, and scan every object in one for a string (the secrets test).

Usage:
  admin.py s3-create ENDPOINT BUCKET
  admin.py s3-scan ENDPOINT BUCKET NEEDLE        # prints the keys holding NEEDLE, then the count scanned
  admin.py s3-lines ENDPOINT BUCKET KEY            # prints the number of lines of one object
  admin.py s3-list ENDPOINT BUCKET PREFIX          # prints the keys under PREFIX, one per line
  admin.py s3-put ENDPOINT BUCKET KEY FILE         # uploads FILE as KEY
  admin.py azure-create CONNECTION_STRING CONTAINER
  admin.py azure-scan CONNECTION_STRING CONTAINER NEEDLE
  admin.py azure-lines CONNECTION_STRING CONTAINER KEY
  admin.py azure-put CONNECTION_STRING CONTAINER KEY FILE
  admin.py delta-read URI OPTIONS_JSON             # the Python `deltalake` reader: prints version, rows, ops
"""
import sys


def s3(endpoint):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="admin",
        aws_secret_access_key="admin",
        region_name="us-east-1",
    )


def main(argv):
    command = argv[1]
    if command == "s3-create":
        s3(argv[2]).create_bucket(Bucket=argv[3])
    elif command == "s3-scan":
        client, bucket, needle = s3(argv[2]), argv[3], argv[4].encode()
        scanned = 0
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
                scanned += 1
                if needle in body:
                    print("LEAK", item["Key"])
        print("scanned", scanned)
    elif command == "s3-list":
        client, bucket, prefix = s3(argv[2]), argv[3], argv[4]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                print(item["Key"])
    elif command == "s3-put":
        s3(argv[2]).upload_file(argv[5], argv[3], argv[4])
    elif command == "s3-lines":
        body = s3(argv[2]).get_object(Bucket=argv[3], Key=argv[4])["Body"].read()
        print(body.count(b"\n"))
    elif command in ("azure-lines", "azure-put"):
        from azure.storage.blob import BlobServiceClient

        container = BlobServiceClient.from_connection_string(argv[2]).get_container_client(argv[3])
        if command == "azure-lines":
            print(container.download_blob(argv[4]).readall().count(b"\n"))
        else:
            with open(argv[5], "rb") as f:
                container.upload_blob(argv[4], f, overwrite=True)
    elif command in ("azure-create", "azure-scan"):
        from azure.storage.blob import BlobServiceClient

        service = BlobServiceClient.from_connection_string(argv[2])
        container = service.get_container_client(argv[3])
        if command == "azure-create":
            container.create_container()
        else:
            needle, scanned = argv[4].encode(), 0
            for blob in container.list_blobs():
                body = container.download_blob(blob.name).readall()
                scanned += 1
                if needle in body:
                    print("LEAK", blob.name)
            print("scanned", scanned)
    elif command == "delta-read":
        import json

        from deltalake import DeltaTable

        table = DeltaTable(argv[2], storage_options=json.loads(argv[3]))
        data = table.to_pyarrow_table()
        history = table.history()
        print(
            json.dumps(
                {
                    "version": table.version(),
                    "rows": data.num_rows,
                    "columns": data.column_names,
                    "jobs": sorted({h["lakeforge"]["job"] for h in history if h.get("lakeforge", {}).get("job")}),
                }
            )
        )
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main(sys.argv)
