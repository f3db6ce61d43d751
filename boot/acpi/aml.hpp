// A minimal AML encoder (ACPI 6.5 §20, "ACPI Machine Language Specification"): just what a
// hand-assembled DSDT needs. Every function returns the encoded bytes of one AML object, so
// objects nest by passing one's bytes as another's body. Anything that can be out of range
// (names, PkgLength, element counts) returns a Result instead of emitting invalid AML.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <span>
#include <string_view>
#include <vector>

#include "vmm/base/error.hpp"

namespace kestrel::acpi::aml {

using Bytes = std::vector<uint8_t>;

// §20.2.4 PkgLength: `total` counts the PkgLength bytes themselves plus everything that follows
// them up to the end of the object. At most 0x0FFFFFFF (four bytes, 28 bits).
Result<Bytes> encode_pkg_length(uint32_t total);
// `body` prefixed with the PkgLength that covers itself and `body`.
Result<Bytes> with_pkg_length(std::span<const uint8_t> body);

// §20.2.3 Data Objects Encoding: the shortest form (ZeroOp, OneOp, OnesOp, BytePrefix,
// WordPrefix, DWordPrefix, QWordPrefix). OnesOp stands for all 64 bits set, which is what it
// means in a table of revision >= 2 (64-bit integers); our DSDT is revision 2.
Bytes integer(uint64_t value);

// §20.2.2 Name Objects Encoding. Accepts the ASL spelling: an optional root prefix '\' or any
// number of parent prefixes '^', then dot-separated segments of 1..4 characters ([A-Z_] then
// [A-Z0-9_]) that are padded with '_' to 4 ("_SB" -> "_SB_"). "\" alone is the root (NullName).
Result<Bytes> name_string(std::string_view path);

// ASL EISAID("PNP0501") (§19.6, EISAID; the compressed EISA id of _HID, §6.1.5): three
// upper-case letters and four upper-case hex digits packed into 32 bits, as an AML integer.
Result<uint32_t> eisa_id_value(std::string_view id);
Result<Bytes> eisa_id(std::string_view id);

// §20.2.5.4 DefPackage := PackageOp PkgLength NumElements PackageElementList (at most 255
// elements; each element is an already-encoded data object).
Result<Bytes> package(std::span<const Bytes> elements);
// §20.2.5.4 DefBuffer := BufferOp PkgLength BufferSize ByteList.
Result<Bytes> buffer(std::span<const uint8_t> data);

// §20.2.5.1 DefName := NameOp NameString DataRefObject.
Result<Bytes> name(std::string_view path, std::span<const uint8_t> object);
// §20.2.5.1 DefScope := ScopeOp PkgLength NameString TermList.
Result<Bytes> scope(std::string_view path, std::span<const uint8_t> terms);
// §20.2.5.2 DefDevice := DeviceOp PkgLength NameString TermList (DeviceOp is ExtOpPrefix 0x82).
Result<Bytes> device(std::string_view path, std::span<const uint8_t> terms);
// §20.2.5.2 DefMethod := MethodOp PkgLength NameString MethodFlags TermList; arg_count 0..7,
// sync level 0 (MethodFlags bits 7:4).
Result<Bytes> method(std::string_view path, uint8_t arg_count, bool serialized,
                     std::span<const uint8_t> terms);
// §20.2.5.3 DefReturn := ReturnOp ArgObject.
Bytes return_value(std::span<const uint8_t> object);

// Concatenation of already-encoded objects, e.g. the TermList of a Scope.
Bytes concat(std::initializer_list<std::span<const uint8_t>> parts);

}  // namespace kestrel::acpi::aml
