// The page's member-list bookkeeping (public/members.js), without a browser:
// a getMembers snapshot that an event overtook must not undo that event.
import assert from "node:assert/strict";
import { test } from "node:test";

import { MemberList, displayName } from "../public/members.js";

test("events apply live; a snapshot replaces the list, then events seen meanwhile are re-applied", () => {
  const list = new MemberList();
  list.event("join", "a", { name: "Ann" });
  assert.deepEqual(list.list(), [{ id: "a", data: { name: "Ann" } }]);

  list.beginSnapshot();
  list.event("join", "b", { name: "Bob" }); // arrives before the (older) snapshot
  list.event("leave", "a", null);
  list.snapshot([{ id: "a", data: { name: "Ann" } }, { id: "c", data: null }]);
  // b's join and a's leave survive the snapshot that did not know them yet.
  assert.deepEqual(list.list(), [{ id: "c", data: null }, { id: "b", data: { name: "Bob" } }]);
  assert.deepEqual(new Set(list.list().map((m) => m.id)), new Set(["b", "c"]));

  // Once no snapshot is in flight, old events are forgotten.
  list.beginSnapshot();
  list.snapshot([{ id: "a", data: { name: "Ann" } }]);
  assert.deepEqual(list.list(), [{ id: "a", data: { name: "Ann" } }]);
});

test("a failed snapshot keeps the list; update replaces a profile; names fall back to the id", () => {
  const list = new MemberList();
  list.event("join", "abcdef", null);
  list.beginSnapshot();
  list.snapshot(null);
  assert.equal(list.list().length, 1);
  list.event("update", "abcdef", { name: "Zed" });
  assert.deepEqual(list.list(), [{ id: "abcdef", data: { name: "Zed" } }]);
  assert.equal(displayName({ id: "abcdef", data: null }), "anonymous abcd");
  assert.equal(displayName({ id: "abcdef", data: { name: "" } }), "anonymous abcd");
  assert.equal(displayName({ id: "abcdef", data: "text" }), "anonymous abcd");
});

test("list is sorted by display name", () => {
  const list = new MemberList();
  list.event("join", "1", { name: "bob" });
  list.event("join", "2", { name: "Ann" });
  list.event("join", "3", { name: "carl" });
  assert.deepEqual(list.list().map(displayName), ["Ann", "bob", "carl"]);
});
