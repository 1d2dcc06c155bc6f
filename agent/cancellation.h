// A one-shot cancellation signal for long work (a download, a backoff
// sleep): one thread cancels, the worker notices at its next check, in an
// interruptible wait, or through a callback that aborts a blocking call
// (e.g. grpc::ClientContext::TryCancel).
//
//   Cancellation cancel;
//   CancelCallback abort_rpc(cancel, [&ctx] { ctx.TryCancel(); });
//   ... blocking RPC ...
//   if (cancel.cancelled()) return absl::CancelledError(cancel.reason());
//
// Thread-safe.
#ifndef FLEET_AGENT_CANCELLATION_H_
#define FLEET_AGENT_CANCELLATION_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace fleet::agent {

class Cancellation {
 public:
  Cancellation() = default;
  Cancellation(const Cancellation&) = delete;
  Cancellation& operator=(const Cancellation&) = delete;

  // Cancels (the first reason wins) and runs the registered callbacks.
  void Cancel(const std::string& reason);
  bool cancelled() const;
  std::string reason() const;

  // Sleeps up to `d`; returns true (early) if cancelled.
  bool WaitFor(absl::Duration d) const;

 private:
  friend class CancelCallback;
  // Runs `fn` at once if already cancelled. Returns a handle for Remove.
  uint64_t Add(std::function<void()> fn);
  // Once it returns, the callback is not running and never will.
  void Remove(uint64_t id);

  mutable absl::Mutex mu_;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  std::string reason_ ABSL_GUARDED_BY(mu_);
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  // Callbacks run under mu_: they must be quick and must not call back
  // into this object.
  std::map<uint64_t, std::function<void()>> callbacks_ ABSL_GUARDED_BY(mu_);
};

// Registers a callback for the lifetime of this object.
class CancelCallback {
 public:
  CancelCallback(Cancellation& cancellation, std::function<void()> fn)
      : cancellation_(cancellation), id_(cancellation.Add(std::move(fn))) {}
  ~CancelCallback() { cancellation_.Remove(id_); }
  CancelCallback(const CancelCallback&) = delete;
  CancelCallback& operator=(const CancelCallback&) = delete;

 private:
  Cancellation& cancellation_;
  uint64_t id_;
};

}  // namespace fleet::agent

#endif  // FLEET_AGENT_CANCELLATION_H_
