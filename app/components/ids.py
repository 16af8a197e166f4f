"""DOM ids: the contract between the first render and the out-of-band updates. Built here only."""

MAIN = "main"
PAGE = "page"
MSG_LIST = "msg-list"
MENU = "menu"
NOTICE = "ws-notice"
LLM_STATUS = "llm-status"


def stream_marker_id(message_id: str) -> str:
    """The hidden element that records the last seq the page has of a stream."""
    return f"seq-{message_id}"


def sim_card_id() -> str:
    return "sim-card"


def sim_bar_id(message_id: str) -> str:
    return f"sim-{message_id}-bar"


def sim_content_id(message_id: str) -> str:
    return f"sim-{message_id}-content"


def sim_status_id(message_id: str) -> str:
    return f"sim-{message_id}-status"


def msg_id(message_id: str) -> str:
    return f"msg-{message_id}"


def msg_body_id(message_id: str) -> str:
    return f"msg-{message_id}-body"


def msg_tail_id(message_id: str) -> str:
    return f"msg-{message_id}-tail"


def msg_estimate_id(message_id: str) -> str:
    """The transient estimate shown after the tail (a progress note; never part of the content)."""
    return f"msg-{message_id}-tail-est"


def msg_warning_id(message_id: str) -> str:
    return f"msg-{message_id}-warning"


def msg_actions_id(message_id: str) -> str:
    return f"msg-{message_id}-actions"


def msg_thinking_id(message_id: str) -> str:
    return f"msg-{message_id}-thinking"


CHAT_INPUT = "chat-input"
CHAT_FORM = "chat-form"
CHAT_NOTICE = "chat-notice"
CHAT_TURN = "chat-turn"
CHAT_EDITING = "chat-editing"
CHAT_CANCEL_EDIT = "chat-cancel-edit"
CHAT_SEND = "chat-send"
CHAT_STOP = "chat-stop"
CHAT_NEW = "chat-new"
CHAT_JUMP = "chat-jump"
SEND_SLOT = "chat-send-slot"
DRAFT_PREVIEW = "draft-preview"
MODEL_PICKER = "model-picker"
SEND_REASON = "send-reason"
CONV_LIST = "chat-conversations"
CONV_VIEWER = "chat-viewer"
CONV_SETTINGS = "chat-settings"
CONV_SEARCH = "chat-search"
CONV_SEARCH_RESULTS = "chat-search-results"

SIM_NOTICE = "sim-error"

TODO_LIST = "todo-list"
TODO_ADD_FORM = "todo-add-form"
TODO_NOTICE = "todo-error"
TODO_COUNT = "todo-count"
TODO_CLEAR = "todo-clear-done"
TODO_TOGGLE_ALL = "todo-toggle-all"


def todo_item_id(todo_id: int) -> str:
    return f"todo-{todo_id}"


def todo_edit_id(todo_id: int) -> str:
    """The inline edit box of a todo's row."""
    return f"todo-{todo_id}-edit"
