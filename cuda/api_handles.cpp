// The C ABI's handles and errors (api_handles.hpp).
#include "api_handles.hpp"

#include <mutex>
#include <sstream>
#include <utility>

namespace ttfs {
namespace api {
namespace {

// ---- Last error ---------------------------------------------------------------------------

thread_local std::string last_error_message;

// For when even building a message fails: short enough for the small-string buffer, so
// assigning it allocates nothing.
void set_error_out_of_memory() noexcept {
    last_error_message.clear();
    try {
        last_error_message = "out of memory";
    } catch (...) {
    }
}

// Sets the thread's message. Never throws.
void set_error(const std::string& message) noexcept {
    try {
        last_error_message = message;
    } catch (...) {
        set_error_out_of_memory();
    }
}

// ---- Registries of live handles -------------------------------------------------------------

// A handle is an id, not an address: the value of a ttfs_model* or ttfs_session* is a slot of
// the registry below, the handle's kind and the slot's generation, packed into the pointer's
// bits. A slot's generation grows every time the slot is reused, so a stale handle (one that
// was freed) never names a live object again, even when the new object reuses the old one's
// memory or slot. Every call decodes and checks its handle before touching anything, so a
// NULL, freed, made-up or wrong-kind value is refused instead of dereferenced. The registry is
// deliberately never destroyed: a handle freed from another library's exit handler must still
// find a working registry.
enum class HandleKind : uintptr_t { kModel = 1, kSession = 2 };

// Bits of a handle, low to high: slot index + 1 (so no handle is NULL), kind, generation.
constexpr unsigned kPointerBits = sizeof(uintptr_t) * 8;
constexpr unsigned kSlotBits = kPointerBits >= 64 ? 24 : 12;
constexpr unsigned kKindBits = 2;
constexpr unsigned kGenerationBits = kPointerBits - kSlotBits - kKindBits;
constexpr uintptr_t kSlotMask = (uintptr_t(1) << kSlotBits) - 1;
constexpr uintptr_t kKindMask = (uintptr_t(1) << kKindBits) - 1;
constexpr uintptr_t kMostGeneration = (uintptr_t(1) << kGenerationBits) - 1;
constexpr size_t kMostSlots = size_t(kSlotMask) - 1;  // slot + 1 must fit in kSlotBits

struct Slot {
    uintptr_t generation = 0;  // of the current (or last) occupant; 0 = never used
    bool live = false;
    HandleKind kind = HandleKind::kModel;
    std::shared_ptr<const ttfs::Model> model;  // kModel
    ttfs_session* session = nullptr;           // kSession: owned by the slot while live
};

struct Registry {
    std::mutex mutex;
    std::vector<Slot> slots;
    std::vector<uint32_t> free_slots;  // reusable; a slot whose generation is spent is retired
};

Registry& registry() {
    static Registry* instance = new Registry();
    return *instance;
}

uintptr_t encode_handle(HandleKind kind, size_t slot, uintptr_t generation) {
    return (generation << (kSlotBits + kKindBits)) | (uintptr_t(kind) << kSlotBits) | uintptr_t(slot + 1);
}

// The live slot a handle names, or nullptr. Caller holds the registry mutex.
Slot* find_slot(Registry& reg, const void* handle, HandleKind kind) {
    const auto value = reinterpret_cast<uintptr_t>(handle);
    const uintptr_t index = value & kSlotMask;
    if (index == 0 || index > reg.slots.size()) return nullptr;
    if (((value >> kSlotBits) & kKindMask) != uintptr_t(kind)) return nullptr;
    Slot& slot = reg.slots[index - 1];
    if (!slot.live || slot.kind != kind || slot.generation != value >> (kSlotBits + kKindBits))
        return nullptr;
    return &slot;
}

// A new slot for a live object, its handle in *handle; false when every slot is taken. Caller
// holds the registry mutex.
bool take_slot(Registry& reg, HandleKind kind, Slot*& taken, uintptr_t& handle) {
    size_t index;
    if (!reg.free_slots.empty()) {
        index = reg.free_slots.back();
        reg.free_slots.pop_back();
    } else if (reg.slots.size() < kMostSlots) {
        reg.slots.emplace_back();
        index = reg.slots.size() - 1;
    } else {
        return false;
    }
    Slot& slot = reg.slots[index];
    ++slot.generation;
    slot.live = true;
    slot.kind = kind;
    taken = &slot;
    handle = encode_handle(kind, index, slot.generation);
    return true;
}

// Ends a slot's occupancy; it is reused later unless its generations are spent. Caller holds
// the registry mutex.
void release_slot(Registry& reg, Slot& slot) {
    slot.live = false;
    slot.model.reset();
    slot.session = nullptr;
    if (slot.generation < kMostGeneration) reg.free_slots.push_back(uint32_t(&slot - reg.slots.data()));
}

std::string too_many_handles_text(const char* what) {
    return std::string("cannot create another ") + what + ": " + std::to_string(kMostSlots) +
           " models and sessions are alive; free some first";
}

// A new live object of `kind` ("model" or "session" in the message): a slot taken under the
// registry lock, `fill` puts the object in it, its handle in `handle`. TTFS_ERR_OUT_OF_MEMORY,
// with nothing taken, when every slot is in use.
template <class Fill>
ttfs_status register_handle(HandleKind kind, const char* what, Fill&& fill, uintptr_t& handle) {
    Registry& reg = registry();
    std::lock_guard<std::mutex> lock(reg.mutex);
    Slot* slot = nullptr;
    if (!take_slot(reg, kind, slot, handle)) return fail(TTFS_ERR_OUT_OF_MEMORY, too_many_handles_text(what));
    fill(*slot);
    return TTFS_OK;
}

bool is_live(const void* handle, HandleKind kind) {
    if (handle == nullptr) return false;
    Registry& reg = registry();
    std::lock_guard<std::mutex> lock(reg.mutex);
    return find_slot(reg, handle, kind) != nullptr;
}

std::string bad_session_text(const void* handle, const char* function) {
    const bool is_model = is_live(handle, HandleKind::kModel);
    return std::string(function) + ": session handle " + handle_text(handle) +
           (is_model ? " is a model, not a session"
                     : " is not a live session (NULL, already freed, or never returned by "
                       "ttfs_session_create)");
}

}  // namespace

ttfs_status fail(ttfs_status status, const std::string& message) noexcept {
    set_error(message);
    return status;
}

ttfs_status fail_noexcept(ttfs_status status, const char* function, const char* text,
                          const char* detail) noexcept {
    try {
        return fail(status, std::string(function) + ": " + text + detail);
    } catch (...) {
        set_error_out_of_memory();
        return status;
    }
}

const char* last_error() noexcept { return last_error_message.c_str(); }

std::string handle_text(const void* handle) {
    std::ostringstream text;
    if (handle == nullptr)
        text << "NULL";
    else
        text << handle;
    return text.str();
}

ttfs_status register_model(std::shared_ptr<const ttfs::Model> model, ttfs_model** out) {
    uintptr_t handle = 0;
    const ttfs_status status =
        register_handle(HandleKind::kModel, "model", [&](Slot& slot) { slot.model = std::move(model); }, handle);
    if (status == TTFS_OK) *out = reinterpret_cast<ttfs_model*>(handle);
    return status;
}

ttfs_status register_session(std::unique_ptr<ttfs_session>& session, ttfs_session** out) {
    uintptr_t handle = 0;
    const ttfs_status status = register_handle(
        HandleKind::kSession, "session", [&](Slot& slot) { slot.session = session.release(); }, handle);
    if (status == TTFS_OK) *out = reinterpret_cast<ttfs_session*>(handle);
    return status;
}

std::shared_ptr<const ttfs::Model> lookup_model(const ttfs_model* handle, const char* function,
                                                ttfs_status& status) {
    if (handle != nullptr) {
        Registry& reg = registry();
        std::lock_guard<std::mutex> lock(reg.mutex);
        if (const Slot* slot = find_slot(reg, handle, HandleKind::kModel)) return slot->model;
    }
    const bool is_session = is_live(handle, HandleKind::kSession);
    status = fail(TTFS_ERR_INVALID_HANDLE,
                  std::string(function) + ": model handle " + handle_text(handle) +
                      (is_session ? " is a session, not a model"
                                  : " is not a live model (NULL, already freed, or never returned "
                                    "by ttfs_model_load_file/ttfs_model_load_memory)"));
    return nullptr;
}

ttfs_status acquire_session(const ttfs_session* handle, const char* function, SessionUse& use) {
    if (handle != nullptr) {
        Registry& reg = registry();
        std::lock_guard<std::mutex> lock(reg.mutex);
        if (const Slot* slot = find_slot(reg, handle, HandleKind::kSession)) {
            ttfs_session* session = slot->session;
            bool expected = false;
            if (!session->busy.compare_exchange_strong(expected, true, std::memory_order_acquire))
                return fail(TTFS_ERR_BUSY,
                            std::string(function) + ": session " + handle_text(handle) +
                                " is in use by another thread (a session must be used by one "
                                "thread at a time; create one session per thread)");
            use.adopt(session);
            return TTFS_OK;
        }
    }
    return fail(TTFS_ERR_INVALID_HANDLE, bad_session_text(handle, function));
}

// (Reading immutable session fields without the flag is safe: a session is freed only while nobody holds its flag,
// and ttfs.h leaves a handle freed by another thread at the same moment to the caller.)
const ttfs_session* check_session(const ttfs_session* handle, const char* function,
                                  ttfs_status& status) {
    if (handle != nullptr) {
        Registry& reg = registry();
        std::lock_guard<std::mutex> lock(reg.mutex);
        if (const Slot* slot = find_slot(reg, handle, HandleKind::kSession)) return slot->session;
    }
    status = fail(TTFS_ERR_INVALID_HANDLE, bad_session_text(handle, function));
    return nullptr;
}

ttfs_status null_argument(const char* function, const char* name) {
    return fail(TTFS_ERR_INVALID_ARGUMENT,
                std::string(function) + ": " + name + " is NULL; expected a valid pointer");
}

ttfs_status free_model(ttfs_model* model, const char* function) {
    // Sessions hold their own shared_ptr, so the model data lives on while they do; the last
    // reference may go here, outside the lock.
    std::shared_ptr<const ttfs::Model> data;
    {
        Registry& reg = registry();
        std::lock_guard<std::mutex> lock(reg.mutex);
        Slot* slot = find_slot(reg, model, HandleKind::kModel);
        if (slot == nullptr) {
            const bool is_session = find_slot(reg, model, HandleKind::kSession) != nullptr;
            return fail(TTFS_ERR_INVALID_HANDLE,
                        std::string(function) + ": model handle " + handle_text(model) +
                            (is_session ? " is a session, not a model (use ttfs_session_free)"
                                        : " is not a live model (already freed, or never "
                                          "returned by a ttfs_model_load function); nothing "
                                          "was freed"));
        }
        data = std::move(slot->model);
        release_slot(reg, *slot);
    }
    return TTFS_OK;
}

ttfs_status free_session(ttfs_session* session, const char* function) {
    ttfs_session* state = nullptr;
    {
        Registry& reg = registry();
        std::lock_guard<std::mutex> lock(reg.mutex);
        Slot* slot = find_slot(reg, session, HandleKind::kSession);
        if (slot == nullptr) {
            const bool is_model = find_slot(reg, session, HandleKind::kModel) != nullptr;
            return fail(TTFS_ERR_INVALID_HANDLE,
                        std::string(function) + ": session handle " + handle_text(session) +
                            (is_model ? " is a model, not a session (use ttfs_model_free)"
                                      : " is not a live session (already freed, or never "
                                        "returned by ttfs_session_create); nothing was freed"));
        }
        // A session in use elsewhere is not freed under that call's feet.
        state = slot->session;
        bool expected = false;
        if (!state->busy.compare_exchange_strong(expected, true))
            return fail(TTFS_ERR_BUSY, std::string(function) + ": session " + handle_text(session) +
                                           " is in use by another thread; free it after that "
                                           "call returns");
        release_slot(reg, *slot);
    }
    delete state;
    return TTFS_OK;
}

}  // namespace api
}  // namespace ttfs
