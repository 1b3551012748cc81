"""Fill the Simplified Chinese catalog from the table below, then compile it.

Run after `./run manage makemessages -l zh_Hans`: `.venv/bin/python scripts/zh_hans.py`.
Strings missing here stay untranslated and are listed, so nothing is missed silently.
Besides the table below, each area keeps its own table in `scripts/zh_hans/*.tsv`
(English, a tab, Chinese; for a plural string, its singular English and the one Chinese form).

Glossary: one Chinese term for each, in every table here and in `notifications/events.py`.
The script refuses a catalog that uses a rejected term (`GLOSSARY` below).

| English                  | Chinese     | not                    |
|--------------------------|-------------|------------------------|
| base model               | 基础模型    | 基座模型, 基座         |
| fine-tune (a model)      | 微调模型    |                        |
| fine-tuning task         | 微调任务    |                        |
| dataset                  | 数据集      |                        |
| example (a training one) | 样本        | 示例 (code samples: 代码示例) |
| validation (of a file)   | 校验        | 验证 (kept for a phone's code and the validation file/loss) |
| model code               | 模型编码    | 模型代码               |
| operator                 | 运维人员    | 管理员 (that is an administrator, who makes accounts) |
| you                      | 你          | 您                     |
| System / User / Assistant (roles) | 系统 / 用户 / 助手 |                 |
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import polib

PO = Path(__file__).resolve().parent.parent / "console" / "locale" / "zh_Hans" / "LC_MESSAGES" / "django.po"

ZH = {
    "Console": "控制台",
    "Revoke the selected keys": "吊销所选密钥",
    "%(count)d keys revoked.": "已吊销 %(count)d 个密钥。",
    "Overview": "概览",
    "Datasets": "数据集",
    "Fine-tuning tasks": "微调任务",
    "Model square": "模型广场",
    "Private instances": "私有实例",
    "Notifications": "通知",
    "API keys": "API 密钥",
    "Wrong username or password. Both are case-sensitive.": "用户名或密码错误。两者均区分大小写。",
    "This account is disabled.": "该账号已停用。",
    "e.g. training pipeline": "例如：训练流水线",
    "Give the key a name.": "请为密钥命名。",
    "You already have an active key named %(name)s.": "你已有一个名为 %(name)s 的有效密钥。",
    "phone number": "手机号",
    "In international form, e.g. +8613800138000. Used for SMS notifications.": "国际格式，例如 +8613800138000。用于短信通知。",
    "phone verified at": "手机号验证时间",
    "language": "语言",
    "name": "名称",
    "created": "创建时间",
    "last used": "最近使用",
    "revoked": "吊销时间",
    "API key": "API 密钥",
    "Enter a phone number in international form, e.g. +8613800138000.": "请输入国际格式的手机号，例如 +8613800138000。",
    "%(number)s is not a valid phone number.": "%(number)s 不是有效的手机号。",
    "Store phone numbers in E.164 form, e.g. +8613800138000.": "手机号须为 E.164 格式，例如 +8613800138000。",
    "English": "English",
    "Simplified Chinese": "简体中文",
    "Account": "账号",
    "Phone verified.": "手机号已验证。",
    "Phone not verified yet.": "手机号尚未验证。",
    "Save": "保存",
    "Revoke API key": "吊销 API 密钥",
    "Revoke key": "吊销密钥",
    "Cancel": "取消",
    "Create API key": "创建 API 密钥",
    "Your new key. Copy it now: it will not be shown again.": "这是你的新密钥。请立即复制：它不会再次显示。",
    "Copied": "已复制",
    "Copy": "复制",
    "Name": "名称",
    "Key": "密钥",
    "Created": "创建时间",
    "Last used": "最近使用",
    "Status": "状态",
    "never": "从未",
    "active": "有效",
    "Revoke": "吊销",
    "No API keys yet. Name one above and create it.": "还没有 API 密钥。在上方输入名称即可创建。",
    "Log in": "登录",
    "Log in to the console": "登录控制台",
    "Username": "用户名",
    "Password": "密码",
    "Base models": "基础模型",
    "Manage keys": "管理密钥",
    "No API key yet.": "还没有 API 密钥。",
    "Create one": "创建一个",
    "to call the console from the SDK.": "即可通过 SDK 调用控制台。",
    "Getting started": "快速开始",
    "Upload training data (JSONL, one example a line).": "上传训练数据（JSONL，每行一条样本）。",
    "Create a fine-tuning task on a base model and watch it train.": "基于基础模型创建微调任务，并实时查看训练过程。",
    "Find the fine-tuned model's code, metrics and files on its task's page; the API lists it under /models.": "在任务页面查看微调模型的编码、指标和文件；API 的 /models 也会列出它。",
    "From Python, with the SDK you already use:": "在 Python 中使用你熟悉的 SDK：",
    "Pages": "分页",
    "Previous": "上一页",
    "Page %(n)s of %(total)s (%(all)s in all)": "第 %(n)s 页，共 %(total)s 页（共 %(all)s 条）",
    "Next": "下一页",
    "Your account was saved.": "账号信息已保存。",
    "Key %(name)s was revoked. Calls made with it now fail.": "密钥 %(name)s 已吊销，使用它的调用将失败。",
    "weights on this server": "本服务器上有权重",
    "Text generation": "文本生成",
    "Image generation": "图像生成",
    "Image understanding": "图像理解",
    "Local folder": "本地目录",
    "Hugging Face repo id in the local cache": "本地缓存中的 Hugging Face 仓库",
    "GGUF file shipped by a Python package": "Python 包自带的 GGUF 文件",
    "All users": "所有用户",
    "Annual private-deployment plan users": "云端私有化年套餐用户",
    "model code": "模型编码",
    "display name": "显示名称",
    "family": "系列",
    "description": "描述",
    "modality": "模态",
    "methods": "微调方式",
    'e.g. ["sft", "dpo"]': '例如 ["sft", "dpo"]',
    "training types": "训练方式",
    'e.g. ["lora", "full"]': '例如 ["lora", "full"]',
    "LoRA results may use the public pool": "LoRA 微调结果可使用公有池推理",
    "who may use it": "可用用户",
    "context length": "上下文长度",
    "training price per 1,000 tokens": "训练单价（每千 tokens）",
    "inference price per 1,000 tokens": "推理单价（每千 tokens）",
    "weights come from": "权重来源",
    "weights location": "权重位置",
    "A folder path; a Hugging Face repo id (org/name); or package:file.gguf for a GGUF file inside an installed Python package.":
        "目录路径；Hugging Face 仓库 ID（org/name）；或 package:file.gguf，表示已安装 Python 包中的 GGUF 文件。",
    "embedded default": "内置默认模型",
    "listed": "上架",
    "base model": "基础模型",
    "base models": "基础模型",
    "No weights configured on this server.": "本服务器未配置权重。",
    "Folder %(path)s has no model in it.": "目录 %(path)s 中没有模型。",
    "%(repo)s is not in the local Hugging Face cache.": "%(repo)s 不在本地 Hugging Face 缓存中。",
    "Package %(package)s with %(file)s is not installed.": "未安装包含 %(file)s 的 %(package)s 包。",
    "Admin": "管理后台",
    "Log out": "退出登录",
    "Console navigation": "控制台导航",
    "Keys let the zhipuai or openai SDK call this console. A key is shown once, when it is made; keep it secret.":
        "密钥用于让 zhipuai 或 openai SDK 调用本控制台。密钥仅在创建时显示一次，请妥善保管。",
    "Accounts are made by an administrator. The first one is printed by the start command.":
        "账号由管理员创建。第一个管理员账号由启动命令打印。",
    "Welcome, %(name)s. Fine-tune open-weight models on your own data, on your own machines.":
        "欢迎，%(name)s。在你自己的机器上，用你自己的数据微调开源大模型。",
    "Revoke the key <strong>%(name)s</strong> (%(prefix)s…)? Every program that uses it will get 401 from then on. This cannot be undone.":
        "确定吊销密钥 <strong>%(name)s</strong>（%(prefix)s…）吗？此后所有使用它的程序都将收到 401。此操作无法撤销。",
    # datasets
    "Validate again (after changing category or base model)":
        "重新校验（修改分类或基础模型之后）",
    "The file is larger than the limit of %(limit)s.":
        "文件超过了 %(limit)s 的上限。",
    "JSONL file":
        "JSONL 文件",
    "Category":
        "分类",
    "Auto-detect from the first lines":
        "根据前几行自动识别",
    "Optional; the file name is used if left empty.":
        "可选；留空则使用文件名。",
    "UTF-8 JSONL: one JSON object (one example) per line. At most %(limit)s.":
        "UTF-8 编码的 JSONL：每行一个 JSON 对象（一条样本）。最大 %(limit)s。",
    "The file is empty: it holds no examples.":
        "文件为空：其中没有任何样本。",
    "Text generation: preference alignment (DPO)":
        "文本生成：偏好对齐（DPO）",
    "Uploaded":
        "已上传",
    "Validating":
        "校验中",
    "Ready":
        "可用",
    "Invalid":
        "无效",
    "file id":
        "文件 ID",
    "owner":
        "所有者",
    "purpose":
        "用途",
    "category":
        "分类",
    "category auto-detected":
        "自动识别分类",
    "The uploader asked the console to detect it.":
        "上传者选择了由控制台自动识别。",
    "file":
        "文件",
    "size in bytes":
        "大小（字节）",
    "SHA-256":
        "SHA-256",
    "request id":
        "请求 ID",
    "status message":
        "状态说明",
    "bytes validated":
        "已校验字节数",
    "last progress":
        "最近进度",
    "tokenizer of":
        "所用分词器",
    "Tokens are counted with this base model's tokenizer and chat template.":
        "使用该基础模型的分词器和对话模板统计 tokens。",
    "lines":
        "行数",
    "examples":
        "样本数",
    "legacy input/target examples":
        "旧版 input/target 样本数",
    "billable tokens per epoch":
        "每轮计费 tokens",
    "Text tokens, plus 1,024 per generated image or 1,600 per understood image.":
        "文本 tokens，另加每张生成图片 1,024 或每张理解图片 1,600。",
    "text tokens":
        "文本 tokens",
    "longest example (tokens)":
        "最长样本（tokens）",
    "examples longer than the context":
        "超出上下文长度的样本数",
    "duplicate lines":
        "重复行数",
    "errors":
        "错误",
    "warnings":
        "警告",
    "full issue report":
        "完整问题报告",
    "Error":
        "错误",
    "Warning":
        "警告",
    "1-based; empty for the whole file":
        "从 1 开始；整个文件的问题则为空",
    "a boolean":
        "布尔值",
    "a string":
        "字符串",
    "an object":
        "对象",
    "The image URL must be a string, not %(type)s.":
        "图片 URL 必须是字符串，而不是%(type)s。",
    "The image URL is empty.":
        "图片 URL 为空。",
    "This is not a valid http(s) URL.":
        "这不是有效的 http(s) URL。",
    "The data URL has no comma after its header; write it as data:image/jpeg;base64,<data>.":
        "data URL 的头部后面缺少逗号；请写成 data:image/jpeg;base64,<数据>。",
    "The data URL is not base64: its prefix must be data:image/jpeg;base64, or data:image/png;base64,.":
        "data URL 不是 base64 编码：前缀必须是 data:image/jpeg;base64, 或 data:image/png;base64,。",
    "The data URL says %(mime)s; only image/jpeg and image/png are accepted (prefix data:image/jpeg;base64, or data:image/png;base64,).":
        "data URL 声明的类型是 %(mime)s；只接受 image/jpeg 和 image/png（前缀 data:image/jpeg;base64, 或 data:image/png;base64,）。",
    "no type":
        "无类型",
    "Only http:// and https:// image URLs are accepted.":
        "图片 URL 只接受 http:// 和 https://。",
    "This is neither an http(s) URL nor valid base64 image data.":
        "这既不是 http(s) URL，也不是有效的 base64 图片数据。",
    "The base64 data decodes to %(size)s bytes that are not a JPEG or PNG image.":
        "base64 数据解码后得到 %(size)s 字节，但不是 JPEG 或 PNG 图片。",
    "The data URL says image/%(declared)s but the data is a %(actual)s image; fix the prefix.":
        "data URL 声明为 image/%(declared)s，但数据实际是 %(actual)s 图片；请修正前缀。",
    "The content list is empty.":
        "content 列表为空。",
    "A content part must be an object, not %(type)s.":
        "content 的每一部分必须是对象，而不是%(type)s。",
    "The text must be a string, not %(type)s.":
        "text 必须是字符串，而不是%(type)s。",
    "Images are not part of this category; choose image generation or image understanding.":
        "该分类不包含图片；请选择图像生成或图像理解分类。",
    'image_url must be an object like {"url": "..."}, not %(type)s.':
        'image_url 必须是形如 {"url": "..."} 的对象，而不是%(type)s。',
    'The part type must be "text" or "image_url", not %(value)s.':
        'type 必须是 "text" 或 "image_url"，而不是 %(value)s。',
    "tools must be a list, not %(type)s.":
        "tools 必须是列表，而不是%(type)s。",
    "A tool must be an object, not %(type)s.":
        "每个工具必须是对象，而不是%(type)s。",
    'The tool type must be "function".':
        '工具的 type 必须是 "function"。',
    "function must be an object with name, description and parameters.":
        "function 必须是包含 name、description 和 parameters 的对象。",
    "The function name must be 1 to 64 letters, digits, _, . or -.":
        "函数名必须由 1 到 64 个字母、数字、_、. 或 - 组成。",
    "The function %(name)s is defined twice.":
        "函数 %(name)s 被定义了两次。",
    "The description must be a string.":
        "description 必须是字符串。",
    "A JSON schema must be an object, not %(type)s.":
        "JSON schema 必须是对象，而不是%(type)s。",
    'The parameters schema must have "type": "object".':
        'parameters 的 schema 必须包含 "type": "object"。',
    "%(value)s is not a JSON schema type.":
        "%(value)s 不是 JSON schema 的类型。",
    "properties must be an object.":
        "properties 必须是对象。",
    "required must be a list of property names.":
        "required 必须是属性名组成的列表。",
    "%(name)s is required but is not among the properties.":
        "%(name)s 被列为必填，但不在 properties 中。",
    "tool_calls must be a non-empty list.":
        "tool_calls 必须是非空列表。",
    "A tool call must be an object, not %(type)s.":
        "每个工具调用必须是对象，而不是%(type)s。",
    'The tool call type must be "function".':
        '工具调用的 type 必须是 "function"。',
    "The tool call id must be a non-empty string.":
        "工具调用的 id 必须是非空字符串。",
    "function must be an object with name and arguments.":
        "function 必须是包含 name 和 arguments 的对象。",
    "The called function needs a name.":
        "被调用的函数缺少名称。",
    "The function %(name)s is not defined in tools.":
        "函数 %(name)s 未在 tools 中定义。",
    'arguments must be a JSON string (like "{\\"city\\": \\"Beijing\\"}"), not %(type)s.':
        'arguments 必须是 JSON 字符串（例如 "{\\"city\\": \\"Beijing\\"}"），而不是%(type)s。',
    "arguments must be a JSON string, not %(type)s.":
        "arguments 必须是 JSON 字符串，而不是%(type)s。",
    "arguments is not valid JSON: %(error)s.":
        "arguments 不是有效的 JSON：%(error)s。",
    "arguments must encode a JSON object.":
        "arguments 必须编码一个 JSON 对象。",
    "messages must be a list, not %(type)s.":
        "messages 必须是列表，而不是%(type)s。",
    "messages is empty.":
        "messages 为空。",
    "A message must be an object, not %(type)s.":
        "每条消息必须是对象，而不是%(type)s。",
    "The message has no role.":
        "该消息缺少 role。",
    "Unknown role %(role)s: use system, user, assistant or tool.":
        "未知角色 %(role)s：请使用 system、user、assistant 或 tool。",
    "A system message may only come first.":
        "system 消息只能位于第一条。",
    "The conversation must start with a user turn (after an optional system message).":
        "对话必须以 user 轮次开始（可选的 system 消息之后）。",
    "tool_calls are not part of chat data; choose the function call category.":
        "对话数据不包含 tool_calls；请选择函数调用分类。",
    "reasoning_content is not part of this category; choose deep thinking.":
        "该分类不包含 reasoning_content；请选择深度思考分类。",
    "reasoning_content must be a string, not %(type)s.":
        "reasoning_content 必须是字符串，而不是%(type)s。",
    "tool turns are not part of chat data; choose the function call category.":
        "对话数据不包含 tool 轮次；请选择函数调用分类。",
    "A tool turn needs the tool_call_id of the call it answers.":
        "tool 轮次需要填写它所响应调用的 tool_call_id。",
    "tool_call_id %(id)s does not answer any earlier tool call.":
        "tool_call_id %(id)s 没有对应任何之前的工具调用。",
    "A tool turn must follow the assistant turn that called it.":
        "tool 轮次必须跟在调用它的 assistant 轮次之后。",
    "The tool result must be a string, not %(type)s.":
        "工具结果必须是字符串，而不是%(type)s。",
    "The conversation has no user turn.":
        "对话中没有 user 轮次。",
    "The prompt must end with a user turn; the outputs follow it.":
        "提示必须以 user 轮次结尾；输出紧随其后。",
    "The conversation has no assistant turn to learn from.":
        "对话中没有可供学习的 assistant 轮次。",
    "The last turn must be the assistant's.":
        "最后一轮必须是 assistant。",
    "The %(role)s message has no content.":
        "%(role)s 消息缺少 content。",
    "content must be a string, not %(type)s.":
        "content 必须是字符串，而不是%(type)s。",
    "The %(role)s message's content is empty.":
        "%(role)s 消息的 content 为空。",
    "%(field)s must be a non-empty list of assistant messages.":
        "%(field)s 必须是由 assistant 消息组成的非空列表。",
    'An output message must have role "assistant".':
        '输出消息的 role 必须是 "assistant"。',
    "This line is a JSON list; each line must be one JSON object (one example), not a list of them.":
        "这一行是 JSON 列表；每行必须是一个 JSON 对象（一条样本），而不是它们的列表。",
    "Each line must be a JSON object, not %(type)s.":
        "每行必须是 JSON 对象，而不是%(type)s。",
    'The line has no "messages" list (keys found: %(keys)s).':
        '该行缺少 "messages" 列表（找到的键：%(keys)s）。',
    "none":
        "无",
    "tools are not part of this category; choose function call.":
        "该分类不包含 tools；请选择函数调用分类。",
    "An image understanding example needs an image in a user turn.":
        "图像理解样本需要在 user 轮次中包含一张图片。",
    "This category takes a single image per example; this one has %(n)s.":
        "该分类每条样本只能有一张图片；这条有 %(n)s 张。",
    'The assistant turn must be a list holding one {"type": "image_url", ...} part: the generated image.':
        'assistant 轮次必须是包含一个 {"type": "image_url", ...} 的列表：即生成的图片。',
    "The legacy input/target form is only accepted for chat data.":
        "旧版 input/target 格式只适用于对话数据。",
    "The legacy form needs both input and target; %(key)s is missing.":
        "旧版格式需要同时有 input 和 target；缺少 %(key)s。",
    "%(key)s must be a string, not %(type)s.":
        "%(key)s 必须是字符串，而不是%(type)s。",
    "%(key)s is empty.":
        "%(key)s 为空。",
    'A DPO line needs "input": {"messages": [...]} with the prompt.':
        'DPO 数据行需要 "input": {"messages": [...]} 作为提示。',
    "The preferred and non-preferred outputs are identical: the model can learn nothing from them.":
        "偏好输出与非偏好输出完全相同：模型无法从中学到任何东西。",
    "This dataset is used by fine-tuning task(s) %(jobs)s and is kept for their record.":
        "该数据集被微调任务 %(jobs)s 使用，为保留任务记录，不能删除。",
    "Unknown category %(category)s.":
        "未知分类 %(category)s。",
    "Validation stopped on an internal error (%(error)s); the error was logged. Upload the file again or tell the operator.":
        "校验因内部错误（%(error)s）中止，错误已记录。请重新上传文件或联系运维人员。",
    "No base model is configured, so tokens were not counted.":
        "未配置基础模型，因此没有统计 tokens。",
    "Tokens were not counted: the tokenizer of %(model)s is not available on this server (%(error)s).":
        "未统计 tokens：本服务器上没有 %(model)s 的分词器（%(error)s）。",
    "Validation failed.":
        "校验失败。",
    "line %(line)s":
        "第 %(line)s 行",
    "first: %(where)s: %(message)s":
        "首个错误：%(where)s：%(message)s",
    "%(examples)s examples, %(tokens)s tokens (%(category)s)":
        "%(examples)s 条样本，%(tokens)s tokens（%(category)s）",
    "<strong>%(name)s</strong> cannot be deleted: it is used by these fine-tuning tasks and is kept for their record:":
        "<strong>%(name)s</strong> 不能删除：以下微调任务使用了它，需为任务保留记录：",
    "Back":
        "返回",
    "Download file":
        "下载文件",
    "Delete":
        "删除",
    "uploaded":
        "上传于",
    "Queued for validation":
        "等待校验",
    "This file is valid and ready for fine-tuning.":
        "该文件校验通过，可用于微调。",
    "The category was detected from its first lines.":
        "分类是根据文件前几行自动识别的。",
    "Examples":
        "样本数",
    "%(n)s converted from input/target":
        "其中 %(n)s 条由 input/target 转换",
    "Tokens per epoch":
        "每轮 tokens",
    "counted with the %(model)s tokenizer and chat template":
        "使用 %(model)s 的分词器和对话模板统计",
    "1,024 tokens each":
        "每张 1,024 tokens",
    "1,600 tokens each, plus the text":
        "每张 1,600 tokens，另加文本",
    "Longest example":
        "最长样本",
    "tokens; context %(n)s":
        "tokens；上下文长度 %(n)s",
    "Errors / warnings":
        "错误 / 警告",
    "Errors":
        "错误",
    "Download the full report (CSV)":
        "下载完整报告（CSV）",
    "The first %(shown)s of %(all)s errors are listed here; the report has them all.":
        "此处列出 %(all)s 个错误中的前 %(shown)s 个；完整报告包含全部错误。",
    "Line":
        "行",
    "Where":
        "位置",
    "Problem":
        "问题",
    "Error pages":
        "错误分页",
    "Warnings":
        "警告",
    "Warnings do not stop training.":
        "警告不会阻止训练。",
    "The first %(shown)s of %(all)s are shown.":
        "显示 %(all)s 条中的前 %(shown)s 条。",
    "No valid example to preview among the first lines.":
        "文件前几行中没有可预览的有效样本。",
    "Upload data":
        "上传数据",
    "Training data for fine-tuning tasks: JSONL files, one example per line. Each upload is checked line by line and its tokens are counted.":
        "微调任务的训练数据：JSONL 文件，每行一条样本。每次上传都会逐行校验并统计 tokens。",
    "Search by name":
        "按名称搜索",
    "Search":
        "搜索",
    "Clear":
        "清除",
    "Tokens":
        "Tokens",
    "Size":
        "大小",
    "detecting…":
        "识别中…",
    "No dataset's name contains “%(q)s”.":
        "没有名称包含“%(q)s”的数据集。",
    "Show all":
        "显示全部",
    "No datasets yet.":
        "还没有数据集。",
    "Upload a JSONL file of examples to fine-tune a model on. Not sure about the format? Start from one of the sample files in the samples/ folder of this console's repository: one per category.":
        "上传一个 JSONL 样本文件来微调模型。不确定格式？可以从本控制台代码仓库 samples/ 目录中的示例文件开始：每个分类一个。",
    "Upload your first dataset":
        "上传第一个数据集",
    "Line %(line)s":
        "第 %(line)s 行",
    "Tools: %(names)s":
        "工具：%(names)s",
    "Preferred":
        "偏好输出",
    "Not preferred":
        "非偏好输出",
    "System":
        "系统",
    "Assistant":
        "助手",
    "Tool result":
        "工具结果",
    "Reasoning":
        "思考过程",
    "(shortened)":
        "（已截断）",
    "image":
        "图片",
    "image too large to preview":
        "图片过大，无法预览",
    "calls":
        "调用",
    "Queued":
        "排队中",
    "The file is larger than the limit.":
        "文件超过大小上限。",
    "Choose a file first.":
        "请先选择文件。",
    "The upload failed: the connection was lost. Nothing was saved; try again.":
        "上传失败：连接已断开。没有保存任何内容，请重试。",
    "Uploading":
        "上传中",
    "Uploaded; saving…":
        "已上传，正在保存…",
    "Drop a JSONL file here":
        "将 JSONL 文件拖放到这里",
    "or choose one:":
        "或选择文件：",
    "Upload and validate":
        "上传并校验",
    "Formats":
        "数据格式",
    "Chat":
        "对话",
    "Function call":
        "函数调用",
    "assistant turns with tool_calls (arguments as a JSON string), tool turns with tool_call_id, and a top-level tools list.":
        "assistant 轮次带 tool_calls（arguments 为 JSON 字符串），tool 轮次带 tool_call_id，以及顶层的 tools 列表。",
    "Deep thinking":
        "深度思考",
    "assistant turns may carry reasoning_content beside content.":
        "assistant 轮次除 content 外还可带 reasoning_content。",
    "Preference (DPO)":
        "偏好对齐（DPO）",
    "in the assistant turn (generation) or a user turn (understanding).":
        "位于 assistant 轮次（图像生成）或 user 轮次（图像理解）中。",
    "Legacy":
        "旧版格式",
    "is accepted and converted to chat.":
        "也可接受，并会转换为对话格式。",
    "This example has %(tokens)s tokens; the base model's context is %(context)s, so it will be truncated in training.":
        "该样本有 %(tokens)s tokens；基础模型的上下文长度为 %(context)s，训练时会被截断。",
    "The line is longer than %(limit)s MiB; each line must hold one example.":
        "该行超过 %(limit)s MiB；每行只能是一条样本。",
    "The file is UTF-16 text; save it as UTF-8 (one JSON object per line).":
        "文件是 UTF-16 编码；请另存为 UTF-8（每行一个 JSON 对象）。",
    "This is a binary file, not JSONL text. Upload a UTF-8 text file with one JSON object per line.":
        "这是二进制文件，不是 JSONL 文本。请上传每行一个 JSON 对象的 UTF-8 文本文件。",
    "The file is a JSON array (it starts with '['). Upload JSONL instead: one JSON object per line, without the surrounding [ ] and without commas between lines.":
        "文件是 JSON 数组（以 '[' 开头）。请改为上传 JSONL：每行一个 JSON 对象，不要外层的 [ ]，行与行之间也不要逗号。",
    "The file holds no examples: it has only blank lines.":
        "文件中没有样本：只有空行。",
    "The file has %(n)s examples; the platform advises at least several hundred (%(min)s or more) for good results.":
        "文件有 %(n)s 条样本；平台建议至少数百条（%(min)s 条或更多）以获得较好的效果。",
    "This line repeats line %(line)s exactly.":
        "该行与第 %(line)s 行完全相同。",
    " It looks like GBK/GB18030 (Chinese) text.":
        "看起来是 GBK/GB18030（中文）编码。",
    "The line is not valid UTF-8 (byte 0x%(byte)02x at byte %(pos)s).%(hint)s Save the file as UTF-8.":
        "该行不是有效的 UTF-8（第 %(pos)s 个字节为 0x%(byte)02x）。%(hint)s请将文件另存为 UTF-8。",
    "The JSON ends before the object is complete (a truncated line?): %(msg)s: column %(col)s.":
        "JSON 在对象结束之前就中断了（该行被截断？）：%(msg)s：第 %(col)s 列。",
    "There is more than one JSON value on this line (extra data at column %(col)s); put each example on its own line.":
        "这一行有多个 JSON 值（第 %(col)s 列有多余数据）；请每行只放一条样本。",
    "This line is not valid JSON: %(msg)s: column %(col)s.":
        "该行不是有效的 JSON：%(msg)s：第 %(col)s 列。",
    "The JSON spreads over several lines (pretty-printed). JSONL needs each example on one line: write it with json.dumps(example) per line, without indent.":
        "JSON 被分散在多行（格式化输出）。JSONL 要求每条样本占一行：请逐行使用 json.dumps(example) 写出，不要缩进。",
    "%(name)s was uploaded; it is being validated.":
        "%(name)s 已上传，正在校验。",
    "This dataset has no report yet.":
        "该数据集还没有报告。",
    "The report file is missing.":
        "报告文件不存在。",
    "The file is missing.":
        "文件不存在。",
    "Dataset %(name)s was deleted.":
        "数据集 %(name)s 已删除。",
    "Text generation: chat":
        "文本生成：对话",
    "Text generation: function call":
        "文本生成：函数调用",
    "Text generation: deep thinking":
        "文本生成：深度思考",
    "Image generation (single image)":
        "图像生成（单图）",
    "Image understanding (single image)":
        "图像理解（单图）",
    "file name":
        "文件名",
    "status":
        "状态",
    "images":
        "图片数",
    "dataset":
        "数据集",
    "datasets":
        "数据集",
    "a number":
        "数字",
    "a list":
        "列表",
    "Images":
        "图片",
    "Preview":
        "预览",
    "User":
        "用户",
    "Delete dataset":
        "删除数据集",
    "Delete <strong>%(name)s</strong> (%(examples)s examples) and its file? This cannot be undone.":
        "确定删除 <strong>%(name)s</strong>（%(examples)s 条样本）及其文件吗？此操作无法撤销。",
    "Page %(n)s of %(total)s":
        "第 %(n)s 页，共 %(total)s 页",
    "%(done)s of %(total)s read (%(pct)s%%)":
        "已读取 %(done)s / %(total)s（%(pct)s%%）",
    # jobs (fine-tuning tasks, model square)
    "Fine-tune on it": "用它微调",
    "%(ready)s ready, %(invalid)s with errors": "%(ready)s 个可用，%(invalid)s 个有错误",
    "Open": "打开",
    "No training data yet.": "还没有训练数据。",
    "Upload a JSONL file": "上传 JSONL 文件",
    "%(running)s running, %(queued)s queued, %(succeeded)s succeeded, %(failed)s failed": "%(running)s 个运行中，%(queued)s 个排队中，%(succeeded)s 个成功，%(failed)s 个失败",
    "No task yet.": "还没有任务。",
    "Create a fine-tuning task": "创建微调任务",
    "Fine-tuned models": "微调模型",
    "Made by your finished tasks.": "由你已完成的任务生成。",
    "Recent tasks": "最近的任务",
    "Cancel the selected tasks": "取消所选任务",
    "Cancellation requested.": "已请求取消。",
    "A number, or auto.": "数字，或 auto（自动）。",
    "Base model": "基础模型",
    "Method": "微调方式",
    "Training type": "训练方式",
    "Training data": "训练数据",
    "— choose a dataset —": "— 选择数据集 —",
    "…or upload a JSONL file": "……或上传 JSONL 文件",
    "Validation data": "验证数据",
    "Automatic: split off 10% of the training data": "自动：从训练数据中划出 10%",
    "Epochs": "训练轮数",
    "Batch size": "批大小",
    "Learning-rate multiplier": "学习率倍数",
    "Model code suffix": "模型编码后缀",
    "Up to 40 characters of a-z, 0-9, - and _. Becomes part of the new model's code.": "最多 40 个字符，可用 a-z、0-9、- 和 _，将成为新模型编码的一部分。",
    "Choose a dataset or upload one.": "请选择或上传一个数据集。",
    "Full-parameter": "全参数",
    "Validating files": "校验文件中",
    "Running": "运行中",
    "Succeeded": "成功",
    "Failed": "失败",
    "Cancelled": "已取消",
    "training data": "训练数据",
    "validation data": "验证数据",
    "method": "微调方式",
    "training type": "训练方式",
    "requested hyperparameters": "请求的超参数",
    "hyperparameters": "超参数",
    "suffix": "后缀",
    "fine-tuning task": "微调任务",
    "fine-tuning tasks": "微调任务",
    "Message": "消息",
    "Metrics": "指标",
    "fine-tuned model": "微调模型",
    "fine-tuned models": "微调模型",
    "step %(current)s/%(total)s, loss %(loss)s": "第 %(current)s/%(total)s 步，loss %(loss)s",
    "Checkpoint saved after epoch %(n)s.": "第 %(n)s 轮结束，已保存检查点。",
    "%(name)s has no usable example: every line has errors, or the file changed after validation.": "%(name)s 没有可用样本：每一行都有错误，或文件在校验后被改动。",
    "Training started on %(worker)s (attempt %(n)s).": "训练已在 %(worker)s 上开始（第 %(n)s 次尝试）。",
    "Validation: %(n)s examples split off automatically.": "验证集：已自动划出 %(n)s 条样本。",
    "Resuming from the checkpoint of epoch %(n)s.": "从第 %(n)s 轮的检查点继续训练。",
    "The training ran out of memory; try a smaller batch size or LoRA.": "训练内存不足；请尝试更小的批大小或 LoRA。",
    "The training exceeded the worker's time limit.": "训练超出了工作进程的时间限制。",
    "Training stopped; the task is cancelled.": "训练已停止，任务已取消。",
    "Training finished: model %(code)s is ready.": "训练完成：模型 %(code)s 已就绪。",
    "Unknown hyperparameter: %(name)s.": "未知的超参数：%(name)s。",
    "%(name)s must be a number or auto.": "%(name)s 必须是数字或 auto。",
    "%(name)s must be between %(low)s and %(high)s.": "%(name)s 必须在 %(low)s 到 %(high)s 之间。",
    "Model %(code)s is not available to you.": "你无法使用模型 %(code)s。",
    "The weights of %(code)s are not on this server (%(where)s), so it cannot be fine-tuned here.": "%(code)s 的权重不在本服务器上（%(where)s），因此无法在此微调。",
    "%(code)s does not support %(method)s.": "%(code)s 不支持 %(method)s。",
    "%(code)s does not support %(type)s training.": "%(code)s 不支持 %(type)s 训练。",
    "No such file.": "文件不存在。",
    "%(name)s did not pass validation; fix its errors and upload it again.": "%(name)s 未通过校验；请修正错误后重新上传。",
    "%(name)s is %(category)s data; %(method)s on %(code)s needs one of: %(allowed)s.": "%(name)s 是 %(category)s 数据；在 %(code)s 上进行 %(method)s 需要以下之一：%(allowed)s。",
    "The suffix may have at most 40 characters of a-z, 0-9, - and _.": "后缀最多 40 个字符，只能包含 a-z、0-9、- 和 _。",
    "method must be sft or dpo.": "method 必须是 sft 或 dpo。",
    "training_type must be lora or full.": "training_type 必须是 lora 或 full。",
    "Task created; checking the files.": "任务已创建，正在检查文件。",
    "Could not allocate a unique model code; try again.": "无法分配唯一的模型编码，请重试。",
    "Failed: %(message)s": "失败：%(message)s",
    "%(name)s did not pass validation (%(count)s errors).": "%(name)s 未通过校验（%(count)s 个错误）。",
    "Files validated; the task is queued.": "文件已校验，任务已排队。",
    "Cancelled before it started.": "任务在开始前已取消。",
    "Cancellation requested; stopping the training.": "已请求取消，正在停止训练。",
    "Cancel the task before deleting it.": "请先取消任务再删除。",
    "This task produced model %(code)s; delete the model first.": "该任务生成了模型 %(code)s，请先删除该模型。",
    "Cancelled (its worker was gone).": "已取消（其工作进程已不存在）。",
    "worker lost: the training worker stopped %(n)s times.": "工作进程丢失：训练进程已中断 %(n)s 次。",
    "from its epoch %(n)s checkpoint": "从第 %(n)s 轮的检查点",
    "from the start": "从头开始",
    "Worker lost; the task will resume %(where)s (attempt %(next)s of %(max)s).": "工作进程丢失；任务将%(where)s继续（第 %(next)s 次，共 %(max)s 次）。",
    "%(n)s tokens": "%(n)s 个 token",
    "Count tokens for": "按此模型计算 token",
    "The base model whose tokenizer, chat template and context length count and check the examples.": "用该基础模型的分词器、对话模板和上下文长度来计数并检查样本。",
    "Validation loss was lowest after epoch %(epoch)s (%(loss)s) and rose after it: the model may be overfitting. Fewer epochs, or a lower learning-rate multiplier, may generalize better.": "验证损失在第 %(epoch)s 轮后最低（%(loss)s），之后有所上升：模型可能过拟合。减少训练轮数或降低学习率倍数可能泛化更好。",
    "The lowest validation loss of this task": "本任务最低的验证损失",
    "lowest": "最低",
    "%(n)s tokens/s": "%(n)s token/秒",
    "The worker was stopped; the task is back in the queue and will resume %(where)s.": "工作进程已停止；任务已回到队列，将%(where)s继续。",
    "Only %(n)s examples: the platform advises at least several hundred for good results.": "仅有 %(n)s 条样本：建议至少提供数百条高质量数据以获得良好效果。",
    "Some examples are longer than %(code)s's context (%(ctx)s tokens; longest %(longest)s): they will be truncated.": "部分样本超过 %(code)s 的上下文长度（%(ctx)s tokens；最长 %(longest)s），将被截断。",
    "Cancel task": "取消任务",
    "Delete task": "删除任务",
    "Cancel this task? A queued task will never start; a running one stops within seconds and its progress is lost.": "确定取消该任务吗？排队中的任务将不会开始；运行中的任务将在数秒内停止，进度将丢失。",
    "Delete this task, its event log and its checkpoints? This cannot be undone.": "确定删除该任务及其事件日志和检查点吗？此操作无法撤销。",
    "Create fine-tuning task": "创建微调任务",
    "Not selectable here because their weights are not on this server:": "以下模型的权重不在本服务器上，因此不可选择：",
    "See the model square": "查看模型广场",
    "Create task": "创建任务",
    "Estimate": "预估",
    "Unit price": "单价",
    "Estimated cost": "预估费用",
    "auto will use": "auto 将使用",
    "Learning rate": "学习率",
    "Choose a base model and a dataset to see the token count and the cost.": "选择基础模型和数据集后，即可查看 token 数和费用。",
    "Task": "任务",
    "automatic 10%% split": "自动划分 10%%",
    "Hyperparameters": "超参数",
    "epochs": "轮数",
    "batch": "批大小",
    "Position %(position)s in the queue": "排队第 %(position)s 位",
    "epoch": "轮次",
    "ETA": "预计剩余",
    "Step %(current)s of %(total)s (%(pct)s%%)": "第 %(current)s 步，共 %(total)s 步（%(pct)s%%）",
    "elapsed": "已用时",
    "tokens trained": "tokens 已训练",
    "Model <code>%(code)s</code> is ready.": "模型 <code>%(code)s</code> 已就绪。",
    "Trained tokens": "训练 tokens",
    "Actual cost": "实际费用",
    "final validation loss": "最终验证 loss",
    "Loss": "损失（loss）",
    "Training and validation loss by step": "按步数的训练与验证 loss",
    "training loss": "训练 loss",
    "validation loss": "验证 loss",
    "No training steps were recorded.": "没有记录到训练步骤。",
    "The chart starts with the first training steps.": "图表将在首批训练步骤后开始绘制。",
    "Events": "事件",
    "No events yet.": "暂无事件。",
    "Checkpoints": "检查点",
    "Epoch": "轮次",
    "Step": "步数",
    "Validation loss": "验证 loss",
    "Saved": "保存时间",
    "A checkpoint is saved at the end of each epoch.": "每轮结束时保存一个检查点。",
    "Search model code or task id": "搜索模型编码或任务 ID",
    "All statuses": "全部状态",
    "Filter": "筛选",
    "Model code": "模型编码",
    "Progress": "进度",
    "No task matches.": "没有匹配的任务。",
    "No fine-tuning tasks yet. Upload training data, then create a task on a base model.": "还没有微调任务。请先上传训练数据，再基于基础模型创建任务。",
    "Base models you can fine-tune. A model whose weights are not on this server says so and cannot be used until an operator installs them.": "可微调的基础模型。权重不在本服务器上的模型会注明，需运维人员安装权重后才能使用。",
    "public pool": "公有池",
    "Context": "上下文",
    "Training price": "训练价格",
    "Who may use it": "可用用户",
    "Weights": "权重",
    "on this server": "在本服务器上",
    "missing": "缺失",
    "Fine-tune": "微调",
    "Task %(id)s created.": "任务 %(id)s 已创建。",
    "The task had already ended.": "任务已经结束。",
    "Cancelling task %(id)s.": "正在取消任务 %(id)s。",
    "Task %(id)s deleted.": "任务 %(id)s 已删除。",
}

# Rejected terms and the glossary's term to use instead (see the docstring).
GLOSSARY = {"基座模型": "基础模型", "基座": "基础模型", "您": "你"}

PLURALS = {
    "%(counter)s has weights on this server.": {0: "%(counter)s 个模型的权重在本服务器上。"},
    # datasets
    "%(n)s dataset queued for validation.": {0: "已将 %(n)s 个数据集加入校验队列。"},
    "%(n)s error": {0: "%(n)s 个错误"},
    "%(n)s warning": {0: "%(n)s 个警告"},
    "This file has %(n)s error; it cannot be used for training until it is fixed and uploaded again.": {0: "该文件有 %(n)s 个错误；修正并重新上传之前不能用于训练。"},
    "The first valid example, as the model will see it.": {0: "前 %(n)s 条有效样本，即模型将看到的样子。"},
}


def area_tables() -> dict[str, str]:
    table: dict[str, str] = {}
    for path in sorted((Path(__file__).resolve().parent / "zh_hans").glob("*.tsv")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            english, tab, chinese = line.partition("\t")
            if not tab or not chinese.strip():
                raise SystemExit(f"{path.name}:{number}: expected English<TAB>Chinese")
            table[english] = chinese.strip()
    return table


def glossary_violations(po) -> list[tuple[str, str]]:
    """(msgid, rejected term) for each translation that uses a term the glossary rejects."""
    found = []
    for entry in po:
        if entry.obsolete:
            continue
        for text in [entry.msgstr, *entry.msgstr_plural.values()]:
            found += [(entry.msgid, term) for term in GLOSSARY if term in text]
    return found


def main() -> int:
    for english, chinese in area_tables().items():
        ZH.setdefault(english, chinese)
        PLURALS.setdefault(english, {0: chinese})
    po = polib.pofile(str(PO))
    po.metadata["Plural-Forms"] = "nplurals=1; plural=0;"
    po.metadata["Content-Type"] = "text/plain; charset=UTF-8"
    po.metadata["Language"] = "zh_Hans"
    po.metadata["Project-Id-Version"] = "finetune-console"
    po.metadata["Language-Team"] = "Simplified Chinese"
    po.metadata["Last-Translator"] = "console team"
    po.metadata["PO-Revision-Date"] = po.metadata.get("POT-Creation-Date", "")
    missing = []
    for entry in po:
        if entry.obsolete:
            continue
        if "python-format" in entry.flags and not re.search(r"%(\(\w+\))?[sd]", entry.msgid):
            # "10% of" looks like a directive to xgettext, but the string is never %-formatted
            entry.flags.remove("python-format")
        if "fuzzy" in entry.flags and entry.msgid not in ZH and entry.msgid not in PLURALS:
            # makemessages guessed from a similar string: a wrong translation is worse than none
            entry.msgstr = ""
            entry.msgstr_plural = {k: "" for k in entry.msgstr_plural}
            entry.previous_msgid = None
        if entry.msgid_plural:
            forms = PLURALS.get(entry.msgid)
            if forms:
                entry.msgstr_plural = forms
            elif not any(entry.msgstr_plural.values()):
                missing.append(entry.msgid)
        elif entry.msgid in ZH:
            entry.msgstr = ZH[entry.msgid]
        elif not entry.msgstr:
            missing.append(entry.msgid)
        if "fuzzy" in entry.flags:
            entry.flags.remove("fuzzy")
        entry.previous_msgid = entry.previous_msgid_plural = entry.previous_msgctxt = None
    rejected = glossary_violations(po)
    for msgid, term in rejected:
        print(f"glossary: use {GLOSSARY[term]} not {term} in: {msgid}", file=sys.stderr)
    if rejected:
        return 1
    po.save()
    subprocess.run(["msgfmt", "--check", "-o", str(PO.with_suffix(".mo")), str(PO)], check=True)
    for msgid in missing:
        print("untranslated:", msgid, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
