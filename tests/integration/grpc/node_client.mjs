// A Node.js client of the gRPC API (@grpc/grpc-js + @grpc/proto-loader), driven by
// test_node_client.py: runs a query and a vector search, prints the answers as JSON.
// Usage: node node_client.mjs <host:port> <api key> <vector index name>
import { fileURLToPath } from "node:url";
import path from "node:path";
import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";

const [target, key, indexName] = process.argv.slice(2);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const definition = protoLoader.loadSync(path.join(root, "proto/heliosdb/v1/heliosdb.proto"), {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
  includeDirs: [path.join(root, "proto")],
});
const { heliosdb } = grpc.loadPackageDefinition(definition);
const client = new heliosdb.v1.HeliosDB(target, grpc.credentials.createInsecure());
const metadata = new grpc.Metadata();
metadata.add("authorization", `Bearer ${key}`);

function call(method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, metadata, (error, response) => (error ? reject(error) : resolve(response)));
  });
}

try {
  const query = await call("ExecuteQuery", {
    sql: "SELECT $1::int + 1 AS answer, $2::text AS greeting",
    params: [{ int_value: 41 }, { string_value: "hello from node" }],
  });
  const search = await call("VectorSearch", {
    index_name: indexName,
    vector: [1, 0, 0],
    top_k: 2,
    filter: "colour = 'red'",
    include_metadata: true,
  });
  let denied = null;
  try {
    await call("ExecuteQuery", { sql: "SELECT * FROM no_such_table_for_node" });
  } catch (error) {
    denied = { code: error.code, heliosdb_code: error.metadata.get("heliosdb-error-code")[0] };
  }
  process.stdout.write(JSON.stringify({ query, search, error: denied }) + "\n");
} finally {
  client.close();
}
