// Moving a tunnel's backend side to another backend (tunnel_move.cc) over real loopback TCP:
// every message whole, once and in order at both ends, the old backend's close reply never
// shown to the client, and the client never closed.
#include <gtest/gtest.h>

#include "tests/unit/tunnel_fixture.h"

namespace wsgate::tunnel_testing {
namespace {

using namespace std::chrono_literals;

class TunnelMoveTest : public TunnelTest {
 protected:
  // The new backend's connection, as BackendMove leaves it: upgraded, not yet relayed.
  void MakeNext() { MakeEndpoint(next_, next_far_, GetParam().backend, true, false); }

  std::vector<std::string> Payloads(const FarEnd& far, uint8_t opcode = ws::kText) {
    std::vector<std::string> out;
    for (const Parsed& frame : far.frames()) {
      if (frame.opcode == opcode) out.push_back(frame.payload);
    }
    return out;
  }
};

TEST_P(TunnelMoveTest, MovesWithEveryMessageOnceAndInOrder) {
  Start();
  client_far_.Send(FromClient(ws::kText, "c0"));
  backend_far_.Send(FromBackend(ws::kText, "b0"));
  ASSERT_TRUE(RunUntil(
      [&] { return backend_far_.frames().size() == 1 && client_far_.frames().size() == 1; }));
  ASSERT_TRUE(tunnel_->BeginMove());
  EXPECT_TRUE(tunnel_->moving());
  // Held from here on: not for the old backend.
  client_far_.Send(FromClient(ws::kText, "c1"));
  MakeNext();
  tunnel_->ReplaceBackend(next_);
  // The old backend is told to go after c0; what it still sends reaches the client.
  ASSERT_TRUE(RunUntil([&] { return backend_far_.got_close(); }));
  ExpectClose(backend_far_.last(), ws::kGoingAway, "session moved");
  EXPECT_EQ(Payloads(backend_far_), std::vector<std::string>{"c0"});
  backend_far_.Send(FromBackend(ws::kText, "b1") + CloseFromBackend(ws::kGoingAway, ""));
  ASSERT_TRUE(RunUntil([&] { return replaced_calls_ == 1 && next_far_.frames().size() == 1; }));
  EXPECT_FALSE(tunnel_->moving());
  EXPECT_EQ(Payloads(next_far_), std::vector<std::string>{"c1"});
  EXPECT_TRUE(next_far_.frames()[0].masked);
  next_far_.Send(FromBackend(ws::kText, "b2"));
  client_far_.Send(FromClient(ws::kText, "c2"));
  ASSERT_TRUE(
      RunUntil([&] { return client_far_.frames().size() == 3 && next_far_.frames().size() == 2; }));
  EXPECT_EQ(Payloads(client_far_), (std::vector<std::string>{"b0", "b1", "b2"}));
  EXPECT_EQ(Payloads(next_far_), (std::vector<std::string>{"c1", "c2"}));
  EXPECT_FALSE(client_far_.got_close());
  EXPECT_FALSE(client_far_.eof);
  EXPECT_TRUE(RunUntil([&] { return backend_far_.eof; }));  // the old connection is closed
  EXPECT_EQ(tunnel_->messages_from_client(), 3u);
  EXPECT_EQ(tunnel_->messages_to_client(), 3u);
  EXPECT_EQ(ended_calls_, 0);
  // The moved session still closes normally, with the new backend.
  client_far_.Send(CloseFromClient(ws::kNormal, "bye"));
  ASSERT_TRUE(RunUntil([&] { return next_far_.got_close(); }));
  next_far_.Send(CloseFromBackend(ws::kNormal, ""));
  ASSERT_TRUE(RunUntil([&] {
    if (next_far_.eof) next_far_.Close();
    if (client_far_.eof) client_far_.Close();
    return ended_calls_ > 0;
  }));
  ExpectDecision(ws::kNormal, ClosedBy::kClient, "bye");
}

TEST_P(TunnelMoveTest, AFragmentedMessageGoesWholeToTheOldBackend) {
  Start();
  client_far_.Send(FromClient(ws::kText, "part1-", /*fin=*/false));
  ASSERT_TRUE(RunUntilFrames(backend_far_, 1));
  ASSERT_TRUE(tunnel_->BeginMove());
  MakeNext();
  tunnel_->ReplaceBackend(next_);
  // Not held inside the message: its end still goes to the old backend, then the close.
  for (int i = 0; i < 5; ++i) event_base_loop(base_.get(), EVLOOP_NONBLOCK);
  EXPECT_FALSE(backend_far_.got_close());
  client_far_.Send(FromClient(ws::kContinuation, "part2") + FromClient(ws::kText, "next"));
  ASSERT_TRUE(RunUntil([&] { return backend_far_.got_close(); }));
  std::vector<Parsed> at_old = backend_far_.frames();
  ASSERT_EQ(at_old.size(), 3u);
  EXPECT_EQ(at_old[1].payload, "part2");
  EXPECT_TRUE(at_old[1].fin);
  backend_far_.Send(CloseFromBackend(ws::kGoingAway, ""));
  ASSERT_TRUE(RunUntilFrames(next_far_, 1));
  EXPECT_EQ(Payloads(next_far_), std::vector<std::string>{"next"});
  EXPECT_EQ(replaced_calls_, 1);
}

TEST_P(TunnelMoveTest, AnOldBackendThatNeverRepliesIsLeftAfterTheCloseTimeout) {
  config_.timeouts.close = 200ms;
  Start();
  ASSERT_TRUE(tunnel_->BeginMove());
  client_far_.Send(FromClient(ws::kText, "held"));
  MakeNext();
  tunnel_->ReplaceBackend(next_);
  ASSERT_TRUE(RunUntil([&] { return backend_far_.got_close(); }));
  backend_far_.Send(FromBackend(ws::kText, "late"));  // no close reply
  ASSERT_TRUE(RunUntilFrames(next_far_, 1));
  EXPECT_EQ(Payloads(client_far_), std::vector<std::string>{"late"});
  EXPECT_EQ(Payloads(next_far_), std::vector<std::string>{"held"});
  EXPECT_GE(last_pause_, 150ms);
  EXPECT_FALSE(client_far_.got_close());
}

TEST_P(TunnelMoveTest, ALostBackendMovesTheSessionWhenTheOwnerSaysSo) {
  move_when_lost_ = true;
  Start();
  backend_far_.Send(FromBackend(ws::kText, "before"));
  ASSERT_TRUE(RunUntilFrames(client_far_, 1));
  backend_far_.Close();
  // (A message sent before wsgate sees the loss may go to the dead socket: documented.)
  ASSERT_TRUE(RunUntil([&] { return tunnel_->moving(); }));
  client_far_.Send(FromClient(ws::kText, "after"));
  MakeNext();
  tunnel_->ReplaceBackend(next_);
  ASSERT_TRUE(RunUntilFrames(next_far_, 1));
  EXPECT_EQ(Payloads(next_far_), std::vector<std::string>{"after"});
  next_far_.Send(FromBackend(ws::kText, "hello again"));
  ASSERT_TRUE(RunUntilFrames(client_far_, 2));
  EXPECT_EQ(Payloads(client_far_), (std::vector<std::string>{"before", "hello again"}));
  EXPECT_FALSE(client_far_.got_close());
  EXPECT_EQ(ended_calls_, 0);
}

TEST_P(TunnelMoveTest, ACancelledMoveGivesTheHeldMessagesToTheOldBackendAndEndsWith1012) {
  Start();
  ASSERT_TRUE(tunnel_->BeginMove());
  client_far_.Send(FromClient(ws::kText, "held"));
  for (int i = 0; i < 5; ++i) event_base_loop(base_.get(), EVLOOP_NONBLOCK);
  tunnel_->CancelMove(/*end_session=*/true);
  ASSERT_TRUE(RunUntil([&] { return client_far_.got_close() && backend_far_.got_close(); }));
  std::vector<Parsed> at_old = backend_far_.frames();
  ASSERT_EQ(at_old.size(), 2u);
  EXPECT_EQ(at_old[0].payload, "held");
  ExpectClose(client_far_.last(), ws::kServiceRestart, "could not move to another backend");
  FinishHandshake();
}

TEST_P(TunnelMoveTest, ACancelledMoveOffALostBackendTellsTheClient1014) {
  move_when_lost_ = true;
  Start();
  backend_far_.Close();
  ASSERT_TRUE(RunUntil([&] { return tunnel_->moving(); }));
  tunnel_->CancelMove(/*end_session=*/true);
  ASSERT_TRUE(RunUntil([&] { return client_far_.got_close(); }));
  ExpectClose(client_far_.last(), ws::kBadGateway, "backend went away");
}

TEST_P(TunnelMoveTest, AGoAwayOnceTheOldBackendIsToldWaitsForTheSwap) {
  Start();
  ASSERT_TRUE(tunnel_->BeginMove());
  client_far_.Send(FromClient(ws::kText, "held"));
  MakeNext();
  tunnel_->ReplaceBackend(next_);
  ASSERT_TRUE(RunUntil([&] { return backend_far_.got_close(); }));
  tunnel_->GoAway(ws::kGoingAway, "shutting down");
  backend_far_.Send(CloseFromBackend(ws::kGoingAway, ""));
  // The held message reaches the new backend before the close does.
  ASSERT_TRUE(RunUntil([&] { return next_far_.got_close() && client_far_.got_close(); }));
  std::vector<Parsed> at_next = next_far_.frames();
  ASSERT_EQ(at_next.size(), 2u);
  EXPECT_EQ(at_next[0].payload, "held");
  ExpectClose(client_far_.last(), ws::kGoingAway, "shutting down");
  EXPECT_EQ(Payloads(client_far_).size(), 0u);
}

TEST_P(TunnelMoveTest, TheClientClosingDuringAMoveEndsTheSessionAsUsual) {
  Start();
  ASSERT_TRUE(tunnel_->BeginMove());
  client_far_.Send(CloseFromClient(ws::kNormal, "bye"));
  for (int i = 0; i < 5; ++i) event_base_loop(base_.get(), EVLOOP_NONBLOCK);
  client_far_.Close();
  ASSERT_TRUE(RunUntil([&] { return !tunnel_->moving(); }));
  ASSERT_TRUE(RunUntil([&] { return backend_far_.got_close(); }));
  EXPECT_EQ(replaced_calls_, 0);
}

TEST_P(TunnelMoveTest, AClientPausedByAStuckOldBackendEndsTheMoveInBoundedTime) {
  // The old backend stopped reading inside a client message: the boundary never comes, so the
  // move gives up after timeouts.close and the session ends as without moving (1012).
  config_.timeouts.close = 300ms;
  Start({}, /*small_buffers=*/true);
  backend_far_.reading = false;
  std::string big = FromClient(ws::kBinary, Pattern(256 * 1024));
  client_far_.Send(big + big + big + big);
  ASSERT_TRUE(RunUntil([&] {
    size_t before = client_far_.sent;
    for (int i = 0; i < 5; ++i) event_base_loop(base_.get(), EVLOOP_NONBLOCK);
    client_far_.Flush();
    return !client_far_.outbox.empty() && client_far_.sent == before;
  }));
  ASSERT_TRUE(tunnel_->BeginMove());
  MakeNext();
  Clock::time_point replaced_at = Clock::now();
  tunnel_->ReplaceBackend(next_);
  ASSERT_TRUE(RunUntil([&] { return !tunnel_->moving(); }));
  EXPECT_GE(Clock::now() - replaced_at, 250ms);
  EXPECT_EQ(replaced_calls_, 0);
  EXPECT_TRUE(next_far_.frames().empty());
  ExpectDecision(ws::kServiceRestart, ClosedBy::kProxy, "could not move to another backend");
}

TEST_P(TunnelMoveTest, AClientPausedByTheOldBackendIsNeverLeftPaused) {
  // Paused because the old backend's output was full: whether the stuck old backend lets the
  // client's message in progress end (the move completes, the rest flows to the new backend)
  // or not (the move gives up, bounded), the client is never left paused.
  config_.timeouts.close = 300ms;
  Start({}, /*small_buffers=*/true);
  backend_far_.reading = false;
  std::string message = FromClient(ws::kBinary, Pattern(16 * 1024));
  std::string burst;
  for (int i = 0; i < 64; ++i) burst += message;
  client_far_.Send(burst);
  ASSERT_TRUE(RunUntil([&] {
    size_t before = client_far_.sent;
    for (int i = 0; i < 5; ++i) event_base_loop(base_.get(), EVLOOP_NONBLOCK);
    client_far_.Flush();
    return !client_far_.outbox.empty() && client_far_.sent == before;
  }));
  ASSERT_TRUE(tunnel_->BeginMove());
  MakeNext();
  tunnel_->ReplaceBackend(next_);
  ASSERT_TRUE(RunUntil([&] { return !tunnel_->moving(); }));
  if (replaced_calls_ == 1) {
    ASSERT_TRUE(RunUntil([&] { return client_far_.outbox.empty(); }));
    EXPECT_FALSE(next_far_.frames().empty());
  } else {
    EXPECT_EQ(tunnel_->close().code, ws::kServiceRestart);
  }
}

TEST_P(TunnelMoveTest, AMoveWithNowhereToGoCarriesOnWithTheOldBackend) {
  Start();
  ASSERT_TRUE(tunnel_->BeginMove());
  client_far_.Send(FromClient(ws::kText, "held"));
  for (int i = 0; i < 5; ++i) event_base_loop(base_.get(), EVLOOP_NONBLOCK);
  tunnel_->CancelMove(/*end_session=*/false);
  ASSERT_TRUE(RunUntilFrames(backend_far_, 1));
  EXPECT_EQ(Payloads(backend_far_), std::vector<std::string>{"held"});
  EXPECT_FALSE(tunnel_->moving());
  client_far_.Send(FromClient(ws::kText, "more"));
  backend_far_.Send(FromBackend(ws::kText, "still here"));
  ASSERT_TRUE(RunUntil(
      [&] { return backend_far_.frames().size() == 2 && client_far_.frames().size() == 1; }));
  EXPECT_FALSE(client_far_.got_close());
  EXPECT_FALSE(backend_far_.got_close());
  EXPECT_FALSE(tunnel_->closing());
}

INSTANTIATE_TEST_SUITE_P(Endpoints, TunnelMoveTest,
                         ::testing::Values(Kinds{Kind::kDirect, Kind::kDirect},
                                           Kinds{Kind::kDirect, Kind::kBufferevent},
                                           Kinds{Kind::kBufferevent, Kind::kBufferevent}),
                         KindsName);

}  // namespace
}  // namespace wsgate::tunnel_testing
