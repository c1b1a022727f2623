// Run by test_node_clients.py: the Node.js `mongodb` driver against HeliosDB.
import { MongoClient, Long } from "mongodb";

const client = new MongoClient(process.env.HELIOS_MONGO_URI);
await client.connect();
const db = client.db(process.env.HELIOS_TEST_DB);
const coll = db.collection("orders");
await coll.insertMany([
  { _id: 1, item: "apple", qty: 5 },
  { _id: 2, item: "pear", qty: Long.fromNumber(2) },
  { _id: 3, item: "apple", qty: 7 },
]);
const out = {};
out.find = await coll.find({ item: "apple" }).sort({ qty: -1 }).project({ _id: 1 }).toArray();
out.group = await coll
  .aggregate([{ $group: { _id: "$item", total: { $sum: "$qty" } } }, { $sort: { _id: 1 } }])
  .toArray();
out.upsert = (await coll.updateOne({ _id: 9 }, { $set: { item: "fig" } }, { upsert: true })).upsertedId;
try {
  await coll.insertOne({ _id: 1 });
  out.duplicate = null;
} catch (error) {
  out.duplicate = { code: error.code, keyValue: error.keyValue };
}
out.count = await coll.countDocuments();
out.estimated = await coll.estimatedDocumentCount();
out.distinct = await coll.distinct("item");
const session = client.startSession();
const transaction = {};
await session.withTransaction(async () => {
  await coll.insertOne({ _id: 10, item: "kiwi" }, { session });
  transaction.inside = await coll.countDocuments({}, { session });
  transaction.outside = await coll.countDocuments();
});
transaction.after = await coll.countDocuments();
session.startTransaction();
await coll.deleteMany({}, { session });
await session.abortTransaction();
transaction.aborted = await coll.countDocuments();
await session.endSession();
out.transaction = transaction;
await db.dropDatabase();
await client.close();
console.log(JSON.stringify(out));
