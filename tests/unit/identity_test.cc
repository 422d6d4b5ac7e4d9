// Identity from the auth hook, group operations on the wire, and the per-worker indexes that
// find a user's or a tag's connections (docs/fleet.md).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "proxy/connections/group_op.h"
#include "proxy/connections/identity.h"
#include "proxy/connections/live_connection.h"
#include "proxy/connections/registry.h"

namespace wsgate {
namespace {

using Strings = std::vector<std::string>;

TEST(IdentityTest, ParsesTheThreeFields) {
  ConnectionIdentity id;
  EXPECT_EQ(ParseIdentity(" alice ", "room-2, room-1,,room-2 ,  ", "1900000000", &id), "");
  EXPECT_EQ(id.user, "alice");
  EXPECT_EQ(id.tags, (Strings{"room-1", "room-2"}));  // trimmed, blanks dropped, sorted, unique
  EXPECT_EQ(id.expires_at, 1900000000);
  EXPECT_EQ(IdentityHeaderLines(id),
            "X-Wsgate-User: alice\r\nX-Wsgate-Tags: room-1,room-2\r\n"
            "X-Wsgate-Expires: 1900000000\r\n");
  EXPECT_EQ(ParseIdentity(nullptr, nullptr, nullptr, &id), "");
  EXPECT_TRUE(id.empty());
  EXPECT_EQ(IdentityHeaderLines(id), "");
}

TEST(IdentityTest, RefusesWhatCannotBeAName) {
  ConnectionIdentity id;
  EXPECT_EQ(ParseIdentity("a\x01", nullptr, nullptr, &id),
            "X-Wsgate-User: user has a control byte");
  EXPECT_EQ(ParseIdentity("", nullptr, nullptr, &id), "X-Wsgate-User: user is empty");
  EXPECT_EQ(ParseIdentity(std::string(129, 'u').c_str(), nullptr, nullptr, &id),
            "X-Wsgate-User: user is longer than 128 bytes");
  EXPECT_EQ(ParseIdentity(nullptr, "ok,b\x7f", nullptr, &id),
            "X-Wsgate-Tags: tag has a control byte");
  std::string many;
  for (int i = 0; i < 65; ++i) many += "t" + std::to_string(i) + ",";
  EXPECT_EQ(ParseIdentity(nullptr, many.c_str(), nullptr, &id), "X-Wsgate-Tags: more than 64 tags");
  for (const char* bad : {"", "soon", "-5", "0", "12x", "99999999999999999999"}) {
    EXPECT_EQ(ParseIdentity(nullptr, nullptr, bad, &id), "X-Wsgate-Expires: expected Unix seconds")
        << bad;
  }
  EXPECT_EQ(CheckTagName("a,b"), "tag has a comma");
  EXPECT_EQ(CheckUserName("a,b"), "");  // a user may hold a comma: it is never a list
}

TEST(IdentityTest, TagsChangeInPlace) {
  ConnectionIdentity id;
  EXPECT_TRUE(id.SetTag("b", true));
  EXPECT_TRUE(id.SetTag("a", true));
  EXPECT_FALSE(id.SetTag("a", true));
  EXPECT_EQ(id.tags, (Strings{"a", "b"}));
  EXPECT_TRUE(id.HasTag("b"));
  EXPECT_TRUE(id.SetTag("b", false));
  EXPECT_FALSE(id.SetTag("b", false));
  EXPECT_EQ(TagsJson(id.tags), "[\"a\"]");
}

TEST(GroupOpTest, PushRoundTripsBinarySafe) {
  GroupOp op;
  op.kind = GroupOp::Kind::kTag;
  op.key = "room-1";
  op.text = false;
  op.payload = std::make_shared<const std::string>(std::string("a\n\0b", 4));
  std::optional<GroupOp> back = DecodeGroupOp(EncodeGroupOp(op, "gw-1"));
  ASSERT_TRUE(back);
  EXPECT_EQ(back->kind, GroupOp::Kind::kTag);
  EXPECT_EQ(back->action, GroupOp::Action::kPush);
  EXPECT_EQ(back->key, "room-1");
  EXPECT_FALSE(back->text);
  EXPECT_EQ(*back->payload, std::string("a\n\0b", 4));
}

TEST(GroupOpTest, CloseRoundTrips) {
  GroupOp op;
  op.kind = GroupOp::Kind::kUser;
  op.action = GroupOp::Action::kClose;
  op.key = "alice";
  op.code = 4001;
  op.reason = "logged out";
  std::optional<GroupOp> back = DecodeGroupOp(EncodeGroupOp(op, "gw-1"));
  ASSERT_TRUE(back);
  EXPECT_EQ(back->action, GroupOp::Action::kClose);
  EXPECT_EQ(back->code, 4001);
  EXPECT_EQ(back->reason, "logged out");
}

TEST(GroupOpTest, RefusesMalformedMessages) {
  const std::string close_head = R"({"v":1,"kind":"user","action":"close","key":"a",)";
  const std::string push_head = R"({"v":1,"kind":"tag","action":"push","key":"a",)";
  const Strings wires = {
      "",
      "{}",
      "not json\n",
      "{\"v\":1}\n",
      R"({"v":2,"kind":"tag","action":"push","key":"a","text":true})" + std::string("\n"),
      R"({"v":1,"kind":"room","action":"push","key":"a","text":true})" + std::string("\n"),
      R"({"v":1,"kind":"tag","action":"push","key":"a,b","text":true})" + std::string("\n"),
      push_head + R"("x":1})" + "\n",                         // no text flag
      push_head + R"("text":true})" + "\n\xff",               // text that is not UTF-8
      close_head + R"("code":1005,"reason":""})" + "\n",      // a code never sent
      close_head + R"("code":1000,"reason":""})" + "\nbody",  // a close with a body
      R"({"v":1,"kind":"user","action":"jump","key":"a"})" + std::string("\n"),
  };
  for (const std::string& wire : wires) EXPECT_FALSE(DecodeGroupOp(wire)) << wire;
}

class FakeConnection : public LiveConnection {
 public:
  bool ended() const override { return false; }
  std::string InfoJson() const override { return "{}"; }
  int Push(evbuffer*, bool) override { return 200; }
  int CloseByApi(uint16_t, const std::string&) override { return 200; }
  int SetTag(const std::string&, bool, std::string*) override { return 200; }
  int64_t expires_at() const override { return 0; }
  void Revalidate() override {}
};

TEST(ConnectionDirectoryTest, FindsConnectionsByUserAndTag) {
  ConnectionDirectory directory;
  FakeConnection a;
  FakeConnection b;
  ConnectionIdentity alice{"alice", {"blue", "red"}, 0};
  ConnectionIdentity bob{"bob", {"red"}, 0};
  directory.Add("A", &a, &alice);
  directory.Add("B", &b, &bob);
  directory.Add("A", &a, &alice);  // registering again changes nothing
  EXPECT_EQ(directory.IdsOfUser("alice"), Strings{"A"});
  Strings red = directory.IdsWithTag("red");
  std::sort(red.begin(), red.end());
  EXPECT_EQ(red, (Strings{"A", "B"}));
  EXPECT_TRUE(directory.IdsWithTag("green").empty());
  directory.SetTag("B", "green", true);
  EXPECT_EQ(directory.IdsWithTag("green"), Strings{"B"});
  directory.Remove("A", &alice);
  EXPECT_TRUE(directory.IdsOfUser("alice").empty());
  EXPECT_EQ(directory.IdsWithTag("red"), Strings{"B"});
  EXPECT_EQ(directory.Find("A"), nullptr);
}

TEST(ConnectionDirectoryTest, HandsOutExpiriesOnceWhenDue) {
  ConnectionDirectory directory;
  FakeConnection a;
  FakeConnection b;
  ConnectionIdentity soon{"", {}, 100};
  ConnectionIdentity later{"", {}, 200};
  directory.Add("B", &b, &later);
  directory.Add("A", &a, &soon);
  directory.Add("A", &a, &soon);
  EXPECT_TRUE(directory.TakeExpired(99).empty());
  EXPECT_EQ(directory.TakeExpired(150), Strings{"A"});
  EXPECT_TRUE(directory.TakeExpired(150).empty());
  directory.ScheduleExpiry("A", 151);
  EXPECT_EQ(directory.TakeExpired(300), (Strings{"A", "B"}));
  directory.ScheduleRevalidation("B", 20);
  directory.ScheduleRevalidation("A", 10);
  EXPECT_TRUE(directory.TakeDueRevalidations(9).empty());
  EXPECT_EQ(directory.TakeDueRevalidations(20), (Strings{"A", "B"}));
  EXPECT_TRUE(directory.TakeDueRevalidations(20).empty());
}

class RecordingObserver : public ConnectionIndexObserver {
 public:
  void OnAdded(const ConnectionEntry& entry, bool first) override {
    events.push_back((first ? "add " : "update ") + entry.id);
  }
  void OnRemoved(const ConnectionEntry& entry) override {
    events.push_back("remove " + entry.id + " " + entry.identity.user);
  }
  void OnTagsChanged(const std::string& id, const std::vector<std::string>& tags) override {
    events.push_back("tags " + id + " " + TagsJson(tags));
  }
  void OnUserCount(const std::string& user, uint64_t count) override {
    events.push_back("user " + user + " " + std::to_string(count));
  }
  Strings events;
};

TEST(ConnectionIndexTest, CountsUsersWithinTheCapAndTellsTheObserver) {
  ConnectionIndex index;
  RecordingObserver observer;
  index.set_observer(&observer);
  uint64_t count = 0;
  EXPECT_TRUE(index.AddUser("alice", 2, &count));
  EXPECT_EQ(count, 1U);
  EXPECT_TRUE(index.AddUser("alice", 2, &count));
  EXPECT_FALSE(index.AddUser("alice", 2, &count));
  EXPECT_TRUE(index.AddUser("bob", 0, &count));  // 0: no cap
  EXPECT_EQ(index.UserCount("alice"), 2U);
  index.RemoveUser("alice");
  index.RemoveUser("alice");
  index.RemoveUser("alice");  // not counted: ignored
  EXPECT_EQ(index.UserCount("alice"), 0U);
  EXPECT_EQ(index.UserCounts().size(), 1U);
  EXPECT_EQ(observer.events, (Strings{"user alice 1", "user alice 2", "user bob 1", "user alice 1",
                                      "user alice 0"}));

  observer.events.clear();
  ConnectionEntry entry;
  entry.id = "X";
  entry.identity.user = "carol";
  index.Add(entry);
  index.Add(entry);  // registered again (the 101, a move): an update
  index.SetTags("X", {"a"});
  EXPECT_EQ(index.Snapshot().size(), 1U);
  EXPECT_EQ(index.Snapshot()[0].identity.tags, Strings{"a"});
  index.Remove("X");
  index.SetTags("X", {"b"});  // gone: nothing to tell
  EXPECT_EQ(observer.events, (Strings{"add X", "update X", "tags X [\"a\"]", "remove X carol"}));
  EXPECT_TRUE(index.RecentlyClosed("X"));
}

}  // namespace
}  // namespace wsgate
