"""Reading a repository's GitHub Discussions (optionally some categories) through GraphQL.

Everything goes to `POST /graphql` (https://docs.github.com/en/graphql/guides/using-the-graphql-
api-for-discussions) with the workflow's own token, which needs `discussions: read`:
- `repository.discussionCategories` turns configured category names or slugs into ids (and
  says when Discussions are switched off);
- `repository.discussions(orderBy: {field: UPDATED_AT, direction: DESC}, categoryId: ...)`
  lists discussions by latest activity (a new comment, an edit, a chosen answer), newest first,
  until one is older than the cursor (see `sources.forum`);
- `repository.discussion(number:)` reads one discussion with its comments and their replies,
  page by page (`comments(first:, after:)`); a comment with more replies than one page holds
  reads the rest through `node(id:)`.

A discussion is one thread (`thread_key` "discussion:<number>"): its opening (title and body),
its comments (replying to the opening) and their replies (replying to their comment). Ids are
forum ids (`sources.forum`): the second a message was created and its `databaseId`; the comment
chosen as the answer (`isAnswer`, or the discussion's `answer`) takes the second of
`answerChosenAt` when that is later, so an answer chosen after the discussion was judged makes
it judged again. Deleted comments (`deletedAt`) and minimized ones (`isMinimized`: spam,
off-topic, outdated, ...) are left out; their replies reply to the opening instead. Authors are
pseudonyms of the user's `databaseId` (of the login when the author is not a user); a `Bot`
author, or a login ending in "[bot]", is a bot. Permalinks are the comments' own `url`s.

Rate limits (https://docs.github.com/en/graphql/overview/rate-limits-and-node-limits-for-the-
graphql-api#exceeding-the-rate-limit): a secondary limit is a 403 or 429 (sometimes a 200) with
a `retry-after` header; the primary one is a 200 whose `errors` say RATE_LIMITED with
`x-ratelimit-remaining: 0`, to wait until `x-ratelimit-reset` (measured from the response's
`Date`, so no local clock is involved). A secondary limit without a hint waits a minute. Pages
are kept small (one discussion per request) because the Actions token has 1,000 points an hour.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import requests

from ..config import GitHubDiscussionsStream
from ..models import Message
from . import SourceError, is_trusted, pseudonym
from .forum import (
    Http,
    Topic,
    answer_id,
    forum_id,
    link_replies,
    parse_time,
    read_topics,
    scan_cutoff,
    start_after,
)

log = logging.getLogger(__name__)

GRAPHQL_URL = "https://api.github.com/graphql"
SECONDARY_LIMIT_SECONDS = 60.0

CATEGORIES = """
query($owner: String!, $name: String!) {
  repository(owner: $owner, name: $name) {
    hasDiscussionsEnabled
    discussionCategories(first: 100) { nodes { id name slug } }
  }
}
"""

LIST = """
query($owner: String!, $name: String!, $category: ID, $first: Int!, $after: String) {
  repository(owner: $owner, name: $name) {
    discussions(first: $first, after: $after, categoryId: $category,
                orderBy: {field: UPDATED_AT, direction: DESC}) {
      pageInfo { hasNextPage endCursor }
      nodes { number createdAt updatedAt }
    }
  }
}
"""

_ACTOR = "author { __typename login ... on User { databaseId } }"
_COMMENT = (
    "id databaseId url body createdAt isAnswer isMinimized minimizedReason deletedAt " + _ACTOR
)

DISCUSSION = f"""
query($owner: String!, $name: String!, $number: Int!, $comments: Int!, $replies: Int!,
      $after: String) {{
  repository(owner: $owner, name: $name) {{
    discussion(number: $number) {{
      id databaseId number title body url createdAt answerChosenAt
      {_ACTOR}
      answer {{ id }}
      comments(first: $comments, after: $after) {{
        pageInfo {{ hasNextPage endCursor }}
        nodes {{
          {_COMMENT}
          replies(first: $replies) {{
            pageInfo {{ hasNextPage endCursor }}
            nodes {{ {_COMMENT} }}
          }}
        }}
      }}
    }}
  }}
}}
"""

REPLIES = f"""
query($id: ID!, $replies: Int!, $after: String) {{
  node(id: $id) {{
    ... on DiscussionComment {{
      replies(first: $replies, after: $after) {{
        pageInfo {{ hasNextPage endCursor }}
        nodes {{ {_COMMENT} }}
      }}
    }}
  }}
}}
"""


def graphql_url(api_url: str) -> str:
    """The GraphQL endpoint beside a REST API URL (GITHUB_API_URL): github.com's, or an
    Enterprise Server's `https://HOST/api/graphql` beside `https://HOST/api/v3`."""
    base = api_url.rstrip("/")
    if not base:
        return GRAPHQL_URL
    if base.endswith("/api/v3"):
        return base[: -len("/v3")] + "/graphql"
    return base + "/graphql"


def rate_limit_wait(response: requests.Response) -> float | None:
    """Seconds GitHub asks to wait, or None when the response is not a rate limit."""
    retry_after = response.headers.get("retry-after")
    if retry_after is not None and retry_after.strip().isdigit():
        return float(retry_after)
    if response.headers.get("x-ratelimit-remaining") == "0" and _rate_limited(response):
        reset = response.headers.get("x-ratelimit-reset", "")
        sent = response.headers.get("date")
        if reset.isdigit() and sent:
            try:
                return max(float(reset) - parsedate_to_datetime(sent).timestamp(), 1.0)
            except (TypeError, ValueError):
                pass
        return SECONDARY_LIMIT_SECONDS
    if response.status_code in (403, 429) and _rate_limited(response):
        return SECONDARY_LIMIT_SECONDS
    return None


def _gone(error: object) -> bool:
    """A discussion deleted (or moved away) between listing and reading: skipped, not fatal."""
    if not isinstance(error, dict) or error.get("type") != "NOT_FOUND":
        return False
    path = error.get("path")
    return isinstance(path, list) and bool(path) and path[-1] == "discussion"


def _rate_limited(response: requests.Response) -> bool:
    if response.status_code == 429:
        return True
    text = response.text.lower()
    return "rate_limited" in text or "rate limit" in text


class GitHubDiscussionsSource:
    """One repository's Discussions (some categories, or all) as a `ChatSource`."""

    def __init__(
        self,
        config: GitHubDiscussionsStream,
        *,
        token: str | None,
        salt: str,
        repository: str = "",
        api_url: str = "",
        session_factory: Callable[[], requests.Session] = requests.Session,
        sleep: Callable[[float], None] = time.sleep,
        page_size: int = 50,
    ) -> None:
        self.stream = config.id
        self.config = config
        self.repository = config.repository or repository
        self._token = token
        self._salt = salt
        self._url = graphql_url(api_url)
        self._page = page_size
        self._http = Http(
            config.id,
            platform="the GitHub API",
            rate_limit=rate_limit_wait,
            session_factory=session_factory,
            sleep=sleep,
        )
        self._category_ids: list[str | None] | None = None

    def close(self) -> None:
        self._http.close()

    def start_after(self) -> int:
        return start_after(self.config.start, newest=self._newest)

    def fetch(self, after: int | None) -> Iterator[Message]:
        start = self.start_after() if after is None else after
        cutoff = scan_cutoff(start)
        touched = [
            topic for category in self._categories() for topic in self._list(category, cutoff)
        ]
        yield from read_topics(
            touched,
            start,
            read=self._discussion,
            max_topics=self.config.max_topics,
            stream=self.stream,
        )

    # --- requests ------------------------------------------------------------------------

    def _owner_and_name(self) -> tuple[str, str]:
        if not self.repository:
            raise SourceError(
                f"stream '{self.stream}' does not know which repository to read; set its "
                "`repository` (owner/name) or run it in GitHub Actions"
            )
        owner, _, name = self.repository.partition("/")
        return owner, name

    def _query(self, query: str, **variables: Any) -> dict[str, Any]:
        if self._token is None:
            raise SourceError(
                f"stream '{self.stream}' needs GITHUB_TOKEN (in a workflow, the job's own token "
                "with `discussions: read`)"
            )
        response = self._http.send(
            "POST",
            self._url,
            json={"query": query, "variables": variables},
            headers={"Authorization": f"bearer {self._token}", "User-Agent": "Pythia"},
        )
        if response.status_code in (401, 403):
            raise SourceError(
                f"stream '{self.stream}': GitHub refused the token ({response.status_code}); "
                "check GITHUB_TOKEN and that the workflow grants `discussions: read`"
            )
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if response.status_code != 200 or not isinstance(answer, dict):
            raise SourceError(
                f"stream '{self.stream}': {self._url} answered {response.status_code} without "
                "GraphQL data; check GITHUB_API_URL"
            )
        errors = [error for error in answer.get("errors") or [] if not _gone(error)]
        if errors:
            raise SourceError(self._explain(errors))
        data = answer.get("data")
        return data if isinstance(data, dict) else {}

    def _explain(self, errors: list[Any]) -> str:
        first = errors[0] if isinstance(errors[0], dict) else {}
        kind = str(first.get("type", ""))
        message = str(first.get("message", "no reason given"))
        where = f"stream '{self.stream}'"
        if kind == "NOT_FOUND":
            return (
                f"{where}: repository '{self.repository}' was not found, or the token cannot "
                "see it; check the stream's `repository`"
            )
        if kind == "FORBIDDEN" or "not accessible" in message.lower():
            return (
                f"{where}: the token may not read the Discussions of '{self.repository}'; add "
                "`discussions: read` to the workflow's `permissions`"
            )
        return f"{where}: GitHub answered '{message}' ({kind or 'error'})"

    def _repository(self, data: dict[str, Any]) -> dict[str, Any]:
        repository = data.get("repository")
        if not isinstance(repository, dict):
            raise SourceError(
                f"stream '{self.stream}': repository '{self.repository}' was not found, or the "
                "token cannot see it; check the stream's `repository`"
            )
        return repository

    def _categories(self) -> list[str | None]:
        """Category ids to list (None lists every category)."""
        if self._category_ids is not None:
            return self._category_ids
        if not self.config.categories:
            self._category_ids = [None]
            return self._category_ids
        owner, name = self._owner_and_name()
        repository = self._repository(self._query(CATEGORIES, owner=owner, name=name))
        if repository.get("hasDiscussionsEnabled") is False:
            raise SourceError(
                f"stream '{self.stream}': Discussions are switched off in '{self.repository}'; "
                "turn them on under Settings › General › Features"
            )
        nodes = (repository.get("discussionCategories") or {}).get("nodes") or []
        known = {
            key.casefold(): str(node["id"])
            for node in nodes
            if isinstance(node, dict) and node.get("id")
            for key in (str(node.get("name", "")), str(node.get("slug", "")))
            if key
        }
        missing = [c for c in self.config.categories if c.casefold() not in known]
        if missing:
            names = ", ".join(str(n.get("name")) for n in nodes if isinstance(n, dict)) or "none"
            raise SourceError(
                f"stream '{self.stream}': no discussion category '{missing[0]}' in "
                f"'{self.repository}' (there are: {names}); fix `categories`"
            )
        self._category_ids = list(
            dict.fromkeys(known[c.casefold()] for c in self.config.categories)
        )
        return self._category_ids

    def _list(self, category: str | None, cutoff: datetime) -> Iterator[Topic]:
        """Discussions active since `cutoff`, newest activity first."""
        owner, name = self._owner_and_name()
        cursor: str | None = None
        while True:
            data = self._query(
                LIST, owner=owner, name=name, category=category, first=self._page, after=cursor
            )
            page = self._repository(data).get("discussions") or {}
            for node in page.get("nodes") or []:
                if not isinstance(node, dict):
                    continue
                updated = parse_time(node.get("updatedAt"))
                created = parse_time(node.get("createdAt"))
                if updated is None or created is None or not isinstance(node.get("number"), int):
                    continue
                if updated < cutoff:
                    return
                yield Topic(key=node["number"], created_at=created)
            info = page.get("pageInfo") or {}
            if not info.get("hasNextPage") or not info.get("endCursor"):
                return
            cursor = str(info["endCursor"])

    def _newest(self) -> datetime | None:
        owner, name = self._owner_and_name()
        latest: list[datetime] = []
        for category in self._categories():
            data = self._query(LIST, owner=owner, name=name, category=category, first=1)
            nodes = (self._repository(data).get("discussions") or {}).get("nodes") or []
            latest += [
                t
                for node in nodes
                if isinstance(node, dict) and (t := parse_time(node.get("updatedAt")))
            ]
        return max(latest, default=None)

    def _discussion(self, topic: Topic) -> list[Message]:
        """One discussion, all its pages, as linked messages (the opening first)."""
        owner, name = self._owner_and_name()
        discussion: dict[str, Any] | None = None
        comments: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            data = self._query(
                DISCUSSION,
                owner=owner,
                name=name,
                number=topic.key,
                comments=self._page,
                replies=self._page,
                after=cursor,
            )
            found = self._repository(data).get("discussion")
            if not isinstance(found, dict):
                return []  # deleted or moved since it was listed
            discussion = discussion or found
            page = found.get("comments") or {}
            for comment in page.get("nodes") or []:
                if isinstance(comment, dict):
                    comments.append({**comment, "replies": self._replies(comment)})
            info = page.get("pageInfo") or {}
            if not info.get("hasNextPage") or not info.get("endCursor"):
                break
            cursor = str(info["endCursor"])
        return self._messages(discussion, comments)

    def _replies(self, comment: dict[str, Any]) -> list[dict[str, Any]]:
        page = comment.get("replies") or {}
        replies = [r for r in page.get("nodes") or [] if isinstance(r, dict)]
        info = page.get("pageInfo") or {}
        while info.get("hasNextPage") and info.get("endCursor") and comment.get("id"):
            data = self._query(
                REPLIES, id=comment["id"], replies=self._page, after=str(info["endCursor"])
            )
            page = (data.get("node") or {}).get("replies") or {}
            replies += [r for r in page.get("nodes") or [] if isinstance(r, dict)]
            info = page.get("pageInfo") or {}
        return replies

    # --- normalising ---------------------------------------------------------------------

    def _messages(
        self, discussion: dict[str, Any], comments: list[dict[str, Any]]
    ) -> list[Message]:
        number = int(discussion["number"])
        created = parse_time(discussion.get("createdAt"))
        if created is None:
            log.warning(
                "stream %s: discussion #%d came without a date; skipped", self.stream, number
            )
            return []
        chosen = parse_time(discussion.get("answerChosenAt"))
        marked = discussion.get("answer")
        answer = marked.get("id") if isinstance(marked, dict) else None
        title = str(discussion.get("title", "")).strip()
        body = str(discussion.get("body", "")).strip()
        opening = self._message(
            discussion,
            id=forum_id(created, int(discussion.get("databaseId") or number)),
            text=f"{title}\n\n{body}".strip(),
            number=number,
            sent_at=created,
        )
        messages = [opening]
        parents: list[int | None] = [None]
        for comment in comments:
            kept = self._comment(comment, number=number, answer=answer, chosen=chosen)
            if kept is not None:
                messages.append(kept)
                parents.append(opening.id)
            for reply in comment.get("replies", []):
                kept_reply = self._comment(reply, number=number, answer=answer, chosen=chosen)
                if kept_reply is not None:
                    messages.append(kept_reply)
                    parents.append(kept.id if kept is not None else opening.id)
        return link_replies(messages, parents)

    def _comment(
        self, raw: dict[str, Any], *, number: int, answer: object, chosen: datetime | None
    ) -> Message | None:
        created = parse_time(raw.get("createdAt"))
        if created is None or raw.get("deletedAt") or raw.get("isMinimized"):
            return None
        text = str(raw.get("body", "")).strip()
        if not text:
            return None
        is_answer = raw.get("isAnswer") is True or (answer is not None and raw.get("id") == answer)
        database_id = int(raw.get("databaseId") or 0)
        return self._message(
            raw,
            id=answer_id(created, chosen, database_id)
            if is_answer
            else forum_id(created, database_id),
            text=text,
            number=number,
            sent_at=created,
            is_answer=is_answer,
        )

    def _message(
        self,
        raw: dict[str, Any],
        *,
        id: int,
        text: str,
        number: int,
        sent_at: datetime,
        is_answer: bool = False,
    ) -> Message:
        author = raw.get("author") if isinstance(raw.get("author"), dict) else {}
        assert isinstance(author, dict)
        login = str(author.get("login") or "") or None
        user_id = author.get("databaseId")
        raw_author = f"github:{user_id}" if isinstance(user_id, int) else f"github:login:{login}"
        return Message(
            stream=self.stream,
            id=id,
            author=pseudonym(self._salt, raw_author if login or user_id else "github:ghost"),
            sent_at=sent_at,
            text=text,
            thread_key=f"discussion:{number}",
            permalink=str(raw.get("url") or "") or None,
            is_bot=author.get("__typename") == "Bot" or bool(login and login.endswith("[bot]")),
            handle=login,
            is_answer=is_answer,
            trusted=is_trusted(self.config.trusted_authors, login, user_id),
        )
