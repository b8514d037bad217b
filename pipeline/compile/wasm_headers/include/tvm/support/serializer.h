// mlc-mtp: Serializer<T> for the types TVM's runtime reads and writes. Little-endian hosts only
// (wasm32, x86-64, aarch64), so scalars are their own bytes. Sequences are a uint64 count and
// the elements; maps a uint64 count and key/value pairs.
#ifndef MLC_MTP_TVM_SUPPORT_SERIALIZER_H_
#define MLC_MTP_TVM_SUPPORT_SERIALIZER_H_

#include <dlpack/dlpack.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/map.h>
#include <tvm/ffi/string.h>
#include <tvm/support/io.h>

#include <cstdint>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

namespace tvm {
namespace support {

template <typename T>
struct Serializer<T, std::enable_if_t<std::is_arithmetic_v<T>>> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const T& v) { s->Write(static_cast<const void*>(&v), sizeof(T)); }
  static bool Read(Stream* s, T* v) { return s->Read(static_cast<void*>(v), sizeof(T)) == sizeof(T); }
};

template <typename T>
struct Serializer<T, std::enable_if_t<std::is_enum_v<T>>> {
  using Base = std::underlying_type_t<T>;
  static constexpr bool enabled = true;
  static void Write(Stream* s, const T& v) { Serializer<Base>::Write(s, static_cast<Base>(v)); }
  static bool Read(Stream* s, T* v) {
    Base raw;
    if (!Serializer<Base>::Read(s, &raw)) return false;
    *v = static_cast<T>(raw);
    return true;
  }
};

namespace detail {
inline void WriteCount(Stream* s, size_t n) { Serializer<uint64_t>::Write(s, static_cast<uint64_t>(n)); }
inline bool ReadCount(Stream* s, uint64_t* n) { return Serializer<uint64_t>::Read(s, n); }
inline void WriteChars(Stream* s, const char* data, size_t n) {
  WriteCount(s, n);
  if (n != 0) s->Write(static_cast<const void*>(data), n);
}
inline bool ReadChars(Stream* s, std::string* out) {
  uint64_t n;
  if (!ReadCount(s, &n)) return false;
  out->assign(static_cast<size_t>(n), '\0');
  return n == 0 || s->Read(static_cast<void*>(&(*out)[0]), out->size()) == out->size();
}
// A sequence (std::vector, ffi::Array): count, then the items; Read hands each item to append.
template <typename T, typename Seq>
void WriteItems(Stream* s, const Seq& items) {
  WriteCount(s, items.size());
  for (const T& item : items) Serializer<T>::Write(s, item);
}
template <typename T, typename Append>
bool ReadItems(Stream* s, Append append) {
  uint64_t n;
  if (!ReadCount(s, &n)) return false;
  for (uint64_t i = 0; i < n; ++i) {
    T item;
    if (!Serializer<T>::Read(s, &item)) return false;
    append(std::move(item));
  }
  return true;
}
// A map (std::unordered_map, ffi::Map): count, then key/value pairs; Read hands each to insert.
template <typename K, typename V, typename Map>
void WriteEntries(Stream* s, const Map& entries) {
  WriteCount(s, entries.size());
  for (const auto& kv : entries) {
    Serializer<K>::Write(s, kv.first);
    Serializer<V>::Write(s, kv.second);
  }
}
template <typename K, typename V, typename Insert>
bool ReadEntries(Stream* s, Insert insert) {
  uint64_t n;
  if (!ReadCount(s, &n)) return false;
  for (uint64_t i = 0; i < n; ++i) {
    K key;
    V value;
    if (!Serializer<K>::Read(s, &key) || !Serializer<V>::Read(s, &value)) return false;
    insert(std::move(key), std::move(value));
  }
  return true;
}
}  // namespace detail

template <>
struct Serializer<std::string> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const std::string& v) { detail::WriteChars(s, v.data(), v.size()); }
  static bool Read(Stream* s, std::string* v) { return detail::ReadChars(s, v); }
};

template <>
struct Serializer<ffi::String> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const ffi::String& v) { detail::WriteChars(s, v.data(), v.size()); }
  static bool Read(Stream* s, ffi::String* v) {
    std::string chars;
    if (!detail::ReadChars(s, &chars)) return false;
    *v = ffi::String(std::move(chars));
    return true;
  }
};

template <typename A, typename B>
struct Serializer<std::pair<A, B>> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const std::pair<A, B>& v) {
    Serializer<A>::Write(s, v.first);
    Serializer<B>::Write(s, v.second);
  }
  static bool Read(Stream* s, std::pair<A, B>* v) {
    return Serializer<A>::Read(s, &v->first) && Serializer<B>::Read(s, &v->second);
  }
};

template <typename T>
struct Serializer<std::vector<T>> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const std::vector<T>& v) { detail::WriteItems<T>(s, v); }
  static bool Read(Stream* s, std::vector<T>* v) {
    v->clear();
    return detail::ReadItems<T>(s, [v](T&& item) { v->push_back(std::move(item)); });
  }
};

template <typename T>
struct Serializer<ffi::Array<T>> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const ffi::Array<T>& v) { detail::WriteItems<T>(s, v); }
  static bool Read(Stream* s, ffi::Array<T>* v) {
    ffi::Array<T> items;
    if (!detail::ReadItems<T>(s, [&items](T&& item) { items.push_back(std::move(item)); })) return false;
    *v = std::move(items);
    return true;
  }
};

template <typename K, typename V>
struct Serializer<std::unordered_map<K, V>> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const std::unordered_map<K, V>& v) { detail::WriteEntries<K, V>(s, v); }
  static bool Read(Stream* s, std::unordered_map<K, V>* v) {
    v->clear();
    return detail::ReadEntries<K, V>(s, [v](K&& key, V&& value) { v->emplace(std::move(key), std::move(value)); });
  }
};

template <typename K, typename V>
struct Serializer<ffi::Map<K, V>> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const ffi::Map<K, V>& v) { detail::WriteEntries<K, V>(s, v); }
  static bool Read(Stream* s, ffi::Map<K, V>* v) {
    ffi::Map<K, V> entries;
    if (!detail::ReadEntries<K, V>(s, [&entries](K&& key, V&& value) { entries.Set(std::move(key), std::move(value)); })) {
      return false;
    }
    *v = std::move(entries);
    return true;
  }
};

template <>
struct Serializer<DLDataType> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const DLDataType& v) {
    Serializer<uint8_t>::Write(s, v.code);
    Serializer<uint8_t>::Write(s, v.bits);
    Serializer<uint16_t>::Write(s, v.lanes);
  }
  static bool Read(Stream* s, DLDataType* v) {
    return Serializer<uint8_t>::Read(s, &v->code) && Serializer<uint8_t>::Read(s, &v->bits) &&
           Serializer<uint16_t>::Read(s, &v->lanes);
  }
};

template <>
struct Serializer<DLDevice> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const DLDevice& v) {
    Serializer<int32_t>::Write(s, static_cast<int32_t>(v.device_type));
    Serializer<int32_t>::Write(s, v.device_id);
  }
  static bool Read(Stream* s, DLDevice* v) {
    int32_t type;
    if (!Serializer<int32_t>::Read(s, &type) || !Serializer<int32_t>::Read(s, &v->device_id)) {
      return false;
    }
    v->device_type = static_cast<DLDeviceType>(type);
    return true;
  }
};

}  // namespace support
}  // namespace tvm

#endif  // MLC_MTP_TVM_SUPPORT_SERIALIZER_H_
