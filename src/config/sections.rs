//! How `queue:` and `runner:` are read: the `type:` of each section first, then the section
//! straight from the text as the struct of that type (with `type` skipped), so every error
//! inside a section keeps its line, column and key path. serde's own tagged enums buffer the
//! section first and lose them.

use std::fmt;

use serde::{Deserialize, Deserializer};

use super::{QueueConfig, Runner};
use crate::{
    dispatch::config::RunnerConfig,
    source::{
        fifo::config::FifoConfig, q4m::config::Q4mConfig, redis::config::RedisConfig,
        sqs::config::SqsConfig,
    },
    store::config::LmdbConfig,
};

/// The `type:` of `queue:` and `runner:`, read from the text first. The sections are then read
/// straight from the text as the struct of their type (with `type` itself skipped), so every
/// error inside them carries its line, column and key path.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub(super) struct SectionKinds {
    #[serde(default)]
    queue: Option<TypeOf<QueueKind>>,
    #[serde(default)]
    runner: Option<TypeOf<RunnerKind>>,
}

/// A section's `type`, other keys ignored (they are read by the second pass).
#[derive(Debug, Clone, Copy, Deserialize)]
struct TypeOf<K> {
    #[serde(rename = "type")]
    kind: Option<K>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum QueueKind {
    Fifo,
    Lmdb,
    Q4m,
    Redis,
    Sqs,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RunnerKind {
    HttpProxy,
}

thread_local! {
    /// The kinds read by the first pass, while [`Config::from_yaml`] runs its second.
    static KINDS: std::cell::Cell<Option<SectionKinds>> = const { std::cell::Cell::new(None) };
}

/// Sets [`KINDS`] for the second pass and clears it after, even on a panic.
pub(super) struct KindsGuard;

impl KindsGuard {
    pub(super) fn set(kinds: SectionKinds) -> KindsGuard {
        KINDS.with(|k| k.set(Some(kinds)));
        KindsGuard
    }
}

impl Drop for KindsGuard {
    fn drop(&mut self) {
        KINDS.with(|k| k.set(None));
    }
}

/// The section's kind from the first pass.
enum Pick<K> {
    /// Read it as this kind.
    Kind(K),
    /// The section has no `type`.
    Missing,
    /// No first pass ran (another deserializer): serde's tagging.
    Tagged,
}

fn section_kind<K: Copy>(pick: impl Fn(&SectionKinds) -> Option<TypeOf<K>>) -> Pick<K> {
    match KINDS.with(std::cell::Cell::get) {
        None => Pick::Tagged,
        Some(kinds) => match pick(&kinds).and_then(|t| t.kind) {
            Some(k) => Pick::Kind(k),
            None => Pick::Missing,
        },
    }
}

/// Refuses a section without `type`, from inside the deserializer so the refusal carries
/// the section's place.
fn missing_type<'de, D: Deserializer<'de>, T>(d: D) -> Result<T, D::Error> {
    struct Refuse<T>(std::marker::PhantomData<T>);
    impl<'de, T> serde::de::Visitor<'de> for Refuse<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a section with a `type`")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, _: A) -> Result<T, A::Error> {
            Err(serde::de::Error::missing_field("type"))
        }
    }
    d.deserialize_map(Refuse(std::marker::PhantomData))
}

/// serde's tagged form, for deserializers other than [`Config::from_yaml`]'s.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum TaggedQueue {
    Fifo(FifoConfig),
    Lmdb(LmdbConfig),
    Q4m(Q4mConfig),
    Redis(RedisConfig),
    Sqs(SqsConfig),
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum TaggedRunner {
    HttpProxy(RunnerConfig),
}

impl<'de> Deserialize<'de> for QueueConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let d = SkipType(d);
        Ok(match section_kind(|k| k.queue) {
            Pick::Kind(QueueKind::Fifo) => QueueConfig::Fifo(FifoConfig::deserialize(d)?),
            Pick::Kind(QueueKind::Lmdb) => QueueConfig::Lmdb(LmdbConfig::deserialize(d)?),
            Pick::Kind(QueueKind::Q4m) => QueueConfig::Q4m(Q4mConfig::deserialize(d)?),
            Pick::Kind(QueueKind::Redis) => QueueConfig::Redis(RedisConfig::deserialize(d)?),
            Pick::Kind(QueueKind::Sqs) => QueueConfig::Sqs(SqsConfig::deserialize(d)?),
            Pick::Missing => missing_type(d.0)?,
            Pick::Tagged => match TaggedQueue::deserialize(d.0)? {
                TaggedQueue::Fifo(c) => QueueConfig::Fifo(c),
                TaggedQueue::Lmdb(c) => QueueConfig::Lmdb(c),
                TaggedQueue::Q4m(c) => QueueConfig::Q4m(c),
                TaggedQueue::Redis(c) => QueueConfig::Redis(c),
                TaggedQueue::Sqs(c) => QueueConfig::Sqs(c),
            },
        })
    }
}

impl<'de> Deserialize<'de> for Runner {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match section_kind(|k| k.runner) {
            // `http_proxy` is the only runner, so its `type` may be left out.
            Pick::Kind(RunnerKind::HttpProxy) | Pick::Missing => {
                Runner::HttpProxy(RunnerConfig::deserialize(SkipType(d))?)
            }
            Pick::Tagged => match TaggedRunner::deserialize(d)? {
                TaggedRunner::HttpProxy(c) => Runner::HttpProxy(c),
            },
        })
    }
}

/// A deserializer that hands a struct's visitor its map without the `type` entry (already
/// read by the first pass). Everything else goes to the wrapped deserializer, which keeps
/// track of lines, columns and key paths.
struct SkipType<D>(D);

impl<'de, D: Deserializer<'de>> Deserializer<'de> for SkipType<D> {
    type Error = D::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_any(SkipTypeVisitor(v))
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_struct(name, fields, SkipTypeVisitor(v))
    }

    fn deserialize_map<V: serde::de::Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_map(SkipTypeVisitor(v))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct enum identifier
        ignored_any
    }
}

struct SkipTypeVisitor<V>(V);

impl<'de, V: serde::de::Visitor<'de>> serde::de::Visitor<'de> for SkipTypeVisitor<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.expecting(f)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.0.visit_map(SkipTypeMap(map))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<V::Value, E> {
        self.0.visit_unit()
    }
}

struct SkipTypeMap<A>(A);

impl<'de, A: serde::de::MapAccess<'de>> serde::de::MapAccess<'de> for SkipTypeMap<A> {
    type Error = A::Error;

    fn next_key_seed<K: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let mut seed = seed;
        loop {
            match self.0.next_key_seed(KeyUnlessType(seed))? {
                None => return Ok(None),
                Some(Ok(key)) => return Ok(Some(key)),
                Some(Err(unused)) => {
                    self.0.next_value::<serde::de::IgnoredAny>()?;
                    seed = unused;
                }
            }
        }
    }

    fn next_value_seed<S: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<S::Value, A::Error> {
        self.0.next_value_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

/// Reads a key: `Err(seed)` for `type`, else the key through `seed`. The key is read inside
/// the wrapped deserializer's own call, so an unknown key is reported at its place.
struct KeyUnlessType<K>(K);

impl<'de, K: serde::de::DeserializeSeed<'de>> serde::de::DeserializeSeed<'de> for KeyUnlessType<K> {
    type Value = Result<K::Value, K>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, K: serde::de::DeserializeSeed<'de>> serde::de::Visitor<'de> for KeyUnlessType<K> {
    type Value = Result<K::Value, K>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Self::Value, E> {
        if key == "type" {
            return Ok(Err(self.0));
        }
        self.0
            .deserialize(serde::de::value::StrDeserializer::<E>::new(key))
            .map(Ok)
    }
}
