#include "agent/journal.h"

#include <stdlib.h>

#include "common/files.h"
#include "common/testing/fake_clock.h"
#include "gtest/gtest.h"

namespace fleet::agent {
namespace {

class UpdateJournalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = JoinPath(
        getenv("TEST_TMPDIR"),
        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    ASSERT_TRUE(RemoveTree(dir_).ok());
    ASSERT_TRUE(MakeDirs(dir_).ok());
    path_ = dir_ + "/journal.db";
  }

  std::unique_ptr<UpdateJournal> OpenJournal() {
    absl::StatusOr<std::unique_ptr<UpdateJournal>> journal =
        UpdateJournal::Open(path_, clock_);
    EXPECT_TRUE(journal.ok()) << journal.status();
    return journal.ok() ? *std::move(journal) : nullptr;
  }

  static v1::UpdateEvent Event(const std::string& directive,
                               v1::UpdatePhase phase) {
    v1::UpdateEvent e;
    e.set_directive_id(directive);
    e.set_phase(phase);
    e.set_product("app");
    return e;
  }

  static UpdateRecord Record(const std::string& id) {
    UpdateRecord r;
    r.directive_id = id;
    r.rollout_id = "ro-1";
    r.product = "app";
    r.from_version = "1.0.0";
    r.to_version = "1.1.0";
    r.kind = v1::DIRECTIVE_KIND_UPDATE;
    r.signed_manifest.set_manifest("manifest bytes \x00\x01");
    r.signed_manifest.add_signatures()->set_key_id("abcd");
    r.deadline_ms = 1234;
    return r;
  }

  FakeClock clock_;
  std::string dir_;
  std::string path_;
};

TEST_F(UpdateJournalTest, AgentIdIsGeneratedOnceAndKept) {
  std::string id;
  {
    auto journal = OpenJournal();
    absl::StatusOr<std::string> first = journal->AgentId("");
    ASSERT_TRUE(first.ok()) << first.status();
    EXPECT_EQ(first->rfind("agent-", 0), 0u) << *first;
    id = *first;
    EXPECT_EQ(*journal->AgentId(""), id);
  }
  auto journal = OpenJournal();
  EXPECT_EQ(*journal->AgentId(""), id);
  // A flag wins and is kept from then on.
  EXPECT_EQ(*journal->AgentId("edge-7"), "edge-7");
  EXPECT_EQ(*journal->AgentId(""), "edge-7");
  EXPECT_EQ(journal->AgentId("../etc").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(UpdateJournalTest, UpdateStateSurvivesReopen) {
  {
    auto journal = OpenJournal();
    UpdateRecord r = Record("d-1");
    v1::UpdateEvent received = Event("d-1", v1::UPDATE_PHASE_RECEIVED);
    ASSERT_EQ(*journal->InsertUpdate(r, &received), 1u);
    r.state = UpdateState::kSwapped;
    r.attempt = 2;
    ASSERT_TRUE(journal->SaveUpdate(r, nullptr, nullptr).ok());
  }
  auto journal = OpenJournal();
  absl::StatusOr<std::optional<UpdateRecord>> found =
      journal->FindUpdate("d-1");
  ASSERT_TRUE(found.ok()) << found.status();
  ASSERT_TRUE(found->has_value());
  const UpdateRecord& r = **found;
  EXPECT_EQ(r.state, UpdateState::kSwapped);
  EXPECT_EQ(r.attempt, 2);
  EXPECT_EQ(r.rollout_id, "ro-1");
  EXPECT_EQ(r.from_version, "1.0.0");
  EXPECT_EQ(r.to_version, "1.1.0");
  EXPECT_EQ(r.signed_manifest.manifest(),
            Record("d-1").signed_manifest.manifest());
  EXPECT_EQ(r.signed_manifest.signatures(0).key_id(), "abcd");
  EXPECT_EQ(r.deadline_ms, 1234);
  EXPECT_EQ(r.created_ms, absl::ToUnixMillis(clock_.Now()));

  absl::StatusOr<std::optional<UpdateRecord>> active = journal->ActiveUpdate();
  ASSERT_TRUE(active.ok() && active->has_value());
  EXPECT_EQ((*active)->directive_id, "d-1");
  EXPECT_EQ(*journal->LastDirectiveId(), "d-1");
}

TEST_F(UpdateJournalTest, DuplicateDirectiveIsRefusedWithoutAnEvent) {
  auto journal = OpenJournal();
  v1::UpdateEvent received = Event("d-1", v1::UPDATE_PHASE_RECEIVED);
  ASSERT_TRUE(journal->InsertUpdate(Record("d-1"), &received).ok());
  EXPECT_EQ(journal->InsertUpdate(Record("d-1"), &received).status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(journal->PendingEvents(0, 100)->size(), 1u);
  EXPECT_EQ(journal->LastEventSeq(), 1u);
}

TEST_F(UpdateJournalTest, FinalUpdateIsNotActiveAndInstalledIsWritten) {
  auto journal = OpenJournal();
  UpdateRecord r = Record("d-1");
  ASSERT_TRUE(journal->InsertUpdate(r, nullptr).ok());
  r.state = UpdateState::kHealthy;
  InstalledRecord installed{"app", "1.1.0", std::string(32, 'x'), "/opt/app",
                            0};
  v1::UpdateEvent healthy = Event("d-1", v1::UPDATE_PHASE_HEALTHY);
  ASSERT_EQ(*journal->SaveUpdate(r, &healthy, &installed), 1u);
  EXPECT_FALSE(journal->ActiveUpdate()->has_value());
  std::optional<InstalledRecord> got = *journal->FindInstalled("app");
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->version, "1.1.0");
  EXPECT_EQ(got->sha256, std::string(32, 'x'));
  EXPECT_EQ(got->path, "/opt/app");
  EXPECT_FALSE(journal->FindInstalled("other")->has_value());
  EXPECT_EQ(
      journal->SaveUpdate(Record("nope"), nullptr, nullptr).status().code(),
      absl::StatusCode::kNotFound);
}

TEST_F(UpdateJournalTest, EventsGetIncreasingSeqsAndAckRemovesUpToSeq) {
  auto journal = OpenJournal();
  for (int i = 1; i <= 5; ++i) {
    v1::UpdateEvent e =
        Event("d-" + std::to_string(i), v1::UPDATE_PHASE_RECEIVED);
    e.set_seq(999);  // ignored: the journal assigns seqs
    EXPECT_EQ(*journal->AppendEvent(e), static_cast<uint64_t>(i));
  }
  ASSERT_TRUE(journal->AckEvents(3).ok());
  std::vector<v1::UpdateEvent> pending = *journal->PendingEvents(0, 100);
  ASSERT_EQ(pending.size(), 2u);
  EXPECT_EQ(pending[0].seq(), 4u);
  EXPECT_EQ(pending[0].directive_id(), "d-4");
  EXPECT_EQ(pending[1].seq(), 5u);
  EXPECT_EQ(journal->PendingEvents(4, 100)->size(), 1u);
  EXPECT_EQ(journal->PendingEvents(0, 1)->size(), 1u);
}

TEST_F(UpdateJournalTest, SeqKeepsGrowingAfterAckOfEverythingAndReopen) {
  {
    auto journal = OpenJournal();
    for (int i = 0; i < 3; ++i) {
      ASSERT_TRUE(
          journal->AppendEvent(Event("d", v1::UPDATE_PHASE_RECEIVED)).ok());
    }
    ASSERT_TRUE(journal->AckEvents(3).ok());
    EXPECT_TRUE(journal->PendingEvents(0, 100)->empty());
  }
  auto journal = OpenJournal();
  EXPECT_EQ(journal->LastEventSeq(), 3u);
  EXPECT_EQ(*journal->AppendEvent(Event("d", v1::UPDATE_PHASE_HEALTHY)), 4u);
  std::vector<v1::UpdateEvent> pending = *journal->PendingEvents(0, 100);
  ASSERT_EQ(pending.size(), 1u);
  EXPECT_EQ(pending[0].seq(), 4u);
  EXPECT_EQ(pending[0].phase(), v1::UPDATE_PHASE_HEALTHY);
}

TEST_F(UpdateJournalTest, SeqCanBeRaisedPastWhatTheControllerHas) {
  {
    auto journal = OpenJournal();
    ASSERT_TRUE(journal->EnsureSeqAbove(41).ok());
    EXPECT_EQ(*journal->AppendEvent(Event("d", v1::UPDATE_PHASE_RECEIVED)),
              42u);
    ASSERT_TRUE(journal->EnsureSeqAbove(10).ok());  // never lowers
    EXPECT_EQ(*journal->AppendEvent(Event("d", v1::UPDATE_PHASE_FAILED)), 43u);
  }
  EXPECT_EQ(OpenJournal()->LastEventSeq(), 43u);
}

TEST_F(UpdateJournalTest, UnackedEventsSurviveReopen) {
  {
    auto journal = OpenJournal();
    ASSERT_TRUE(
        journal->AppendEvent(Event("d-1", v1::UPDATE_PHASE_RECEIVED)).ok());
    ASSERT_TRUE(
        journal->AppendEvent(Event("d-1", v1::UPDATE_PHASE_FAILED)).ok());
    ASSERT_TRUE(journal->AckEvents(1).ok());
  }
  auto journal = OpenJournal();
  std::vector<v1::UpdateEvent> pending = *journal->PendingEvents(0, 100);
  ASSERT_EQ(pending.size(), 1u);
  EXPECT_EQ(pending[0].seq(), 2u);
  EXPECT_EQ(pending[0].phase(), v1::UPDATE_PHASE_FAILED);
}

TEST_F(UpdateJournalTest, WaitForEventAfterWakesOnAppend) {
  auto journal = OpenJournal();
  EXPECT_FALSE(
      journal->WaitForEventAfter(0, absl::Now() + absl::Milliseconds(50)));
  std::thread writer([&] {
    absl::SleepFor(absl::Milliseconds(100));
    ASSERT_TRUE(
        journal->AppendEvent(Event("d", v1::UPDATE_PHASE_RECEIVED)).ok());
  });
  const absl::Time start = absl::Now();
  EXPECT_TRUE(journal->WaitForEventAfter(0, absl::Now() + absl::Seconds(10)));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  writer.join();
}

v1::BlacklistedVersion Banned(const std::string& product,
                              const std::string& version) {
  v1::BlacklistedVersion b;
  b.set_product(product);
  b.set_version(version);
  return b;
}

TEST_F(UpdateJournalTest, BlacklistIsReplacedWholeAndSurvivesReopen) {
  {
    auto journal = OpenJournal();
    EXPECT_FALSE(*journal->IsBlacklisted("app", "2.0.0"));
    ASSERT_TRUE(
        journal
            ->ReplaceBlacklist({Banned("app", "2.0.0"), Banned("app", "2.1.0"),
                                Banned("app", "2.0.0")})
            .ok());
    ASSERT_TRUE(
        journal
            ->ReplaceBlacklist({Banned("app", "2.1.0"), Banned("db", "9.0.0")})
            .ok());
  }
  // Reopened as after a restart with the controller away.
  auto journal = OpenJournal();
  EXPECT_FALSE(*journal->IsBlacklisted("app", "2.0.0"));
  EXPECT_TRUE(*journal->IsBlacklisted("app", "2.1.0"));
  EXPECT_TRUE(*journal->IsBlacklisted("db", "9.0.0"));
  EXPECT_FALSE(*journal->IsBlacklisted("db", "2.1.0"));
  std::vector<v1::BlacklistedVersion> list = *journal->Blacklist();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].product(), "app");
  EXPECT_EQ(list[1].version(), "9.0.0");
  ASSERT_TRUE(journal->ReplaceBlacklist({}).ok());
  EXPECT_TRUE(journal->Blacklist()->empty());
}

TEST_F(UpdateJournalTest, PreviousVersionsComeFromCommittedUpdatesNewestFirst) {
  auto journal = OpenJournal();
  EXPECT_TRUE(journal->PreviousVersions("app", "")->empty());
  struct Step {
    const char* id;
    const char* product;
    const char* from;
    const char* to;
    UpdateState state;
  };
  const Step steps[] = {
      {"d-1", "app", "0.9.0", "1.0.0", UpdateState::kHealthy},
      {"d-2", "app", "1.0.0", "1.1.0", UpdateState::kHealthy},
      {"d-3", "app", "1.1.0", "1.5.0", UpdateState::kFailed},
      {"d-4", "other", "5.0.0", "6.0.0", UpdateState::kHealthy},
      {"d-5", "app", "1.1.0", "1.2.0", UpdateState::kRolledBack},
      {"d-6", "app", "1.1.0", "2.0.0", UpdateState::kHealthy},
  };
  for (const Step& step : steps) {
    UpdateRecord r = Record(step.id);
    r.product = step.product;
    r.from_version = step.from;
    r.to_version = step.to;
    ASSERT_TRUE(journal->InsertUpdate(r, nullptr).ok());
    r.state = step.state;
    ASSERT_TRUE(journal->SaveUpdate(r, nullptr, nullptr).ok());
  }
  // Versions never committed (1.5.0, 1.2.0) and other products are not
  // history; the current version is left out.
  EXPECT_EQ(*journal->PreviousVersions("app", "2.0.0"),
            (std::vector<std::string>{"1.1.0", "1.0.0", "0.9.0"}));
  EXPECT_EQ(*journal->PreviousVersions("app", "1.1.0"),
            (std::vector<std::string>{"2.0.0", "1.0.0", "0.9.0"}));
  EXPECT_EQ(*journal->PreviousVersions("other", "6.0.0"),
            std::vector<std::string>{"5.0.0"});
}

TEST_F(UpdateJournalTest, ExecutablesThatRanHereAreRememberedPerProduct) {
  const std::string a(32, 'a'), b(32, 'b');
  {
    std::unique_ptr<UpdateJournal> journal = OpenJournal();
    ASSERT_TRUE(journal->RecordRanHere("app", a).ok());
    ASSERT_TRUE(journal->RecordRanHere("app", a).ok());  // idempotent
    UpdateRecord r = Record("d-1");
    ASSERT_TRUE(journal->InsertUpdate(r, nullptr).ok());
    r.state = UpdateState::kHealthy;
    InstalledRecord installed{"app", "1.1.0", b, "/opt/app", 0};
    ASSERT_TRUE(journal->SaveUpdate(r, nullptr, &installed).ok());
  }
  std::unique_ptr<UpdateJournal> journal = OpenJournal();
  EXPECT_TRUE(*journal->RanHere("app", a));
  EXPECT_TRUE(*journal->RanHere("app", b));  // a committed install
  EXPECT_FALSE(*journal->RanHere("other", a));
  EXPECT_FALSE(*journal->RanHere("app", std::string(32, 'c')));
}

}  // namespace
}  // namespace fleet::agent
