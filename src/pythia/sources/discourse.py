"""Reading a Discourse forum (optionally some categories or tags) through its JSON API.

Requests (https://docs.discourse.org), anonymous on a public forum, or with the `Api-Key` and
`Api-Username` headers (DISCOURSE_API_KEY, DISCOURSE_API_USERNAME) on a private one:
- `GET /site.json` turns configured categories (slug, name or id) into ids;
- `GET /latest.json`, `/c/{slug}/{id}.json` or `/tag/{name}.json` (`?page=N`) list topics by
  latest bump, newest first, until a topic that is not pinned was bumped before the cursor (see
  `sources.forum`); a topic is touched when its `last_posted_at` is after the cursor. With
  categories and tags, a topic in any of them is read.
- `GET /t/{id}.json?include_raw=true` reads a topic with its first posts and the ids of all of
  them (`post_stream.stream`); `GET /t/{id}/posts.json?post_ids[]=...&include_raw=true` the rest,
  twenty at a time. `raw` is the Markdown people typed (`cooked` HTML, stripped, without it).

A topic is one thread (`thread_key` "topic:<id>"): its first post (with the title) opens it and
every other post replies to the post it answers (`reply_to_post_number`) or to the opening.
Ids are forum ids (`sources.forum`): the second a post was created and its post id. Discourse
does not say when an answer was accepted, so an answer accepted after a topic was judged is seen
when the topic next gets a post. The Solved plugin marks the answer on the post
(`accepted_answer`) and on the topic (`accepted_answer.post_number`); either is honoured, and a
mark that fits no post is ignored. Deleted posts (`deleted_at`, visible to staff keys), posts
their author deleted (`user_deleted`), hidden (flagged) posts and posts that are not regular
replies (`post_type` 2 moderator actions, 3 small actions, 4 whispers) are left out. Authors are
pseudonyms of their user id on the forum's host; negative user ids (system, discobot, AI bots)
are bots. Permalinks are `/t/{slug}/{id}/{post_number}`.

Rate limits: Discourse answers 429 with a `Retry-After` header and, from the application,
`{"error_type": "rate_limit", "extras": {"wait_seconds": N}}`; either is waited out (the header
first), and a 429 without either gets exponential backoff.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from ..config import DiscourseStream
from ..models import Message
from . import SourceError, is_trusted, pseudonym
from .forum import (
    Http,
    Topic,
    forum_id,
    link_replies,
    parse_time,
    read_topics,
    scan_cutoff,
    start_after,
)

POSTS_PER_REQUEST = 20  # Discourse's own chunk size for a topic's posts
REGULAR_POST = 1
_TAG = re.compile(r"<[^>]+>")


def rate_limit_wait(response: requests.Response) -> float | None:
    """Seconds Discourse asks to wait, or None when the response is not a rate limit."""
    if response.status_code != 429:
        return None
    header = response.headers.get("Retry-After", "").strip()
    if header.isdigit():
        return float(header)
    try:
        extras = response.json().get("extras") or {}
        return float(extras.get("wait_seconds") or 0.0)
    except (ValueError, TypeError, AttributeError):
        return 0.0


def plain_text(cooked: str) -> str:
    """Discourse's cooked HTML as text, for a post without `raw`."""
    text = re.sub(r"<br\s*/?>|</p>|</li>|</pre>", "\n", cooked, flags=re.IGNORECASE)
    return html.unescape(_TAG.sub("", text)).strip()


class DiscourseSource:
    """One Discourse forum (some categories or tags, or all of it) as a `ChatSource`."""

    def __init__(
        self,
        config: DiscourseStream,
        *,
        salt: str,
        api_key: str | None = None,
        api_username: str | None = None,
        session_factory: Callable[[], requests.Session] = requests.Session,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.stream = config.id
        self.config = config
        self._salt = salt
        self._api_key = api_key
        self._api_username = api_username
        self._host = urlsplit(self.site).netloc or self.site
        self._http = Http(
            config.id,
            platform=self.site,
            rate_limit=rate_limit_wait,
            session_factory=session_factory,
            sleep=sleep,
        )
        self._lists: list[str] | None = None

    @property
    def site(self) -> str:
        site = self.config.site.strip().rstrip("/")
        return site if site.startswith("http") else f"https://{site}"

    def close(self) -> None:
        self._http.close()

    def start_after(self) -> int:
        return start_after(self.config.start, newest=self._newest)

    def fetch(self, after: int | None) -> Iterator[Message]:
        start = self.start_after() if after is None else after
        cutoff = scan_cutoff(start)
        touched = [topic for path in self._topic_lists() for topic in self._list(path, cutoff)]
        yield from read_topics(
            touched,
            start,
            read=self._topic,
            max_topics=self.config.max_topics,
            stream=self.stream,
        )

    # --- requests ------------------------------------------------------------------------

    def _get(self, path: str, params: Any = None) -> dict[str, Any] | None:
        """The JSON object of one GET; None for a topic that is gone or hidden from us (403,
        404 or 410 on /t/), a SourceError for anything a setting must fix."""
        if bool(self._api_key) != bool(self._api_username):
            raise SourceError(
                f"stream '{self.stream}': set both DISCOURSE_API_KEY and "
                "DISCOURSE_API_USERNAME for a private forum, or neither for a public one"
            )
        headers = {"Accept": "application/json", "User-Agent": "Pythia"}
        if self._api_key and self._api_username:
            headers |= {"Api-Key": self._api_key, "Api-Username": self._api_username}
        response = self._http.send("GET", f"{self.site}{path}", params=params, headers=headers)
        status = response.status_code
        if status == 200:
            try:
                answer = response.json()
            except ValueError:
                answer = None
            if isinstance(answer, dict):
                return answer
            raise SourceError(
                f"stream '{self.stream}': {self.site} did not answer like a Discourse forum; "
                "check the site URL"
            )
        if status in (403, 404, 410) and path.startswith("/t/"):
            return None
        if status in (401, 403):
            raise SourceError(
                f"stream '{self.stream}': {self.site} refused access ({status}); for a private "
                "forum set DISCOURSE_API_KEY and DISCOURSE_API_USERNAME (a user who can read it)"
            )
        if status == 404:
            raise SourceError(
                f"stream '{self.stream}': {self.site}{path} was not found; check the site URL, "
                "the categories and the tags"
            )
        raise SourceError(
            f"stream '{self.stream}': {self.site}{path} answered {status}; check the site URL"
        )

    def _topic_lists(self) -> list[str]:
        """The topic lists to scan: the categories' and tags', or the latest topics."""
        if self._lists is not None:
            return self._lists
        lists = [f"/tag/{quote(tag, safe='')}.json" for tag in self.config.tags]
        if self.config.categories:
            site = self._get("/site.json") or {}
            categories = [c for c in site.get("categories") or [] if isinstance(c, dict)]
            for wanted in self.config.categories:
                match = next((c for c in categories if wanted.casefold() in _names(c)), None)
                if match is None:
                    known = ", ".join(str(c.get("slug")) for c in categories) or "none"
                    raise SourceError(
                        f"stream '{self.stream}': no category '{wanted}' on {self.site} "
                        f"(there are: {known}); fix `categories`"
                    )
                lists.append(f"/c/{match.get('slug') or match['id']}/{match['id']}.json")
        self._lists = lists or ["/latest.json"]
        return self._lists

    def _list(self, path: str, cutoff: datetime) -> Iterator[Topic]:
        """Topics of one list with posts since `cutoff`, by latest bump."""
        page = 0
        while True:
            data = self._get(path, params={"page": page} if page else None) or {}
            topic_list = data.get("topic_list") or {}
            topics = [t for t in topic_list.get("topics") or [] if isinstance(t, dict)]
            for topic in topics:
                created = parse_time(topic.get("created_at"))
                if created is None or not isinstance(topic.get("id"), int):
                    continue
                bumped = parse_time(topic.get("bumped_at")) or created
                posted = parse_time(topic.get("last_posted_at")) or created
                pinned = bool(topic.get("pinned") or topic.get("pinned_globally"))
                if bumped < cutoff and not pinned:
                    return
                if posted >= cutoff:
                    yield Topic(key=topic["id"], created_at=created)
            if not topics or not topic_list.get("more_topics_url"):
                return
            page += 1

    def _newest(self) -> datetime | None:
        latest: list[datetime] = []
        for path in self._topic_lists():
            data = self._get(path) or {}
            for topic in (data.get("topic_list") or {}).get("topics") or []:
                if isinstance(topic, dict) and (t := parse_time(topic.get("last_posted_at"))):
                    latest.append(t)
        return max(latest, default=None)

    def _topic(self, topic: Topic) -> list[Message]:
        """One topic, every visible post, as linked messages (the first post first)."""
        data = self._get(f"/t/{topic.key}.json", params={"include_raw": "true"})
        if not isinstance(data, dict):
            return []  # deleted, or moved where we cannot see it, since it was listed
        stream = data.get("post_stream") or {}
        posts = [p for p in stream.get("posts") or [] if isinstance(p, dict)]
        loaded = {p.get("id") for p in posts}
        rest = [i for i in stream.get("stream") or [] if isinstance(i, int) and i not in loaded]
        for start in range(0, len(rest), POSTS_PER_REQUEST):
            chunk = rest[start : start + POSTS_PER_REQUEST]
            more = self._get(
                f"/t/{topic.key}/posts.json",
                params={"post_ids[]": chunk, "include_raw": "true"},
            )
            more_posts = ((more or {}).get("post_stream") or {}).get("posts") or []
            posts += [p for p in more_posts if isinstance(p, dict)]
        return self._messages(data, posts)

    # --- normalising ---------------------------------------------------------------------

    def _messages(self, topic: dict[str, Any], posts: list[dict[str, Any]]) -> list[Message]:
        posts = sorted(posts, key=lambda p: int(p.get("post_number") or 0))
        accepted = topic.get("accepted_answer")
        accepted_number = accepted.get("post_number") if isinstance(accepted, dict) else None
        by_number: dict[int, Message] = {}
        messages: list[Message] = []
        parents: list[int | None] = []
        for post in posts:
            number = post.get("post_number")
            message = self._post(topic, post, accepted_number=accepted_number)
            if message is None or not isinstance(number, int):
                continue
            if not messages and number != 1:
                continue  # without its first post a topic has no question to judge
            parent = post.get("reply_to_post_number")
            by_number[number] = message
            messages.append(message)
            parents.append(
                by_number[parent].id if isinstance(parent, int) and parent in by_number else None
            )
        return link_replies(messages, parents)

    def _post(
        self, topic: dict[str, Any], post: dict[str, Any], *, accepted_number: object
    ) -> Message | None:
        created = parse_time(post.get("created_at"))
        post_id = post.get("id")
        number = post.get("post_number")
        if created is None or not isinstance(post_id, int) or not isinstance(number, int):
            return None
        if post.get("deleted_at") or post.get("user_deleted") or post.get("hidden"):
            return None
        if post.get("post_type", REGULAR_POST) != REGULAR_POST:
            return None
        raw = post.get("raw")
        text = raw.strip() if isinstance(raw, str) else plain_text(str(post.get("cooked", "")))
        if number == 1:
            text = f"{str(topic.get('title', '')).strip()}\n\n{text}".strip()
        if not text:
            return None
        user_id = post.get("user_id")
        username = str(post.get("username") or "") or None
        is_answer = number > 1 and (
            post.get("accepted_answer") is True or number == accepted_number
        )
        slug = str(topic.get("slug") or "topic")
        return Message(
            stream=self.stream,
            id=forum_id(created, post_id),
            author=pseudonym(self._salt, f"discourse:{self._host}:{user_id}"),
            sent_at=created,
            text=text,
            thread_key=f"topic:{topic.get('id')}",
            permalink=f"{self.site}/t/{slug}/{topic.get('id')}/{number}",
            is_bot=isinstance(user_id, int) and user_id < 0,
            handle=username,
            is_answer=is_answer,
            trusted=is_trusted(self.config.trusted_authors, username, user_id),
        )


def _names(category: dict[str, Any]) -> set[str]:
    return {
        str(value).casefold()
        for value in (category.get("slug"), category.get("name"), category.get("id"))
        if value is not None
    }
